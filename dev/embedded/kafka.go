// Package embedded owns the in-process servers of the local stack and the
// tests: a Kafka-protocol broker (franz-go's kfake) and a MongoDB-wire-protocol
// server (FerretDB with its SQLite backend). Both persist under a data
// directory and can be closed and started again on the same address and
// directory, which is how fault tests take a dependency away and bring it
// back. Nothing outside the dev module may import these servers.
//
// Clients of the MongoDB server talk to a front of ours, not to FerretDB
// directly. Besides dropping every connection at once on Close, it makes
// FerretDB keep the two promises a service's write path relies on (see
// front.go): a single-document update, delete or findAndModify filtered on
// _id equality is serialized per document across all connections, so a
// read-modify-write in FerretDB cannot interleave with another write of
// that document; and a compare-and-set such as {_id: X, revision: 5} is
// checked by a lookup of X by _id (the only filter FerretDB serves from an
// index) rather than by reading the whole collection. Writes filtered on
// anything else are neither serialized nor faster, as FerretDB does them.
package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaConfig says where and how to run the embedded broker.
type KafkaConfig struct {
	// Port to listen on at 127.0.0.1; 0 picks a free port.
	Port int
	// DataDir holds the broker's topics, records and committed offsets
	// across restarts; "" keeps everything in memory, which grows without
	// bound and is lost on Close.
	DataDir string
	// Topics are created when missing, on every start.
	Topics []kafkax.Topic
	// Logger receives the broker's errors; nil discards them. Its warnings
	// and request traces are never forwarded: they narrate every client
	// disconnect.
	Logger *slog.Logger
}

// Kafka is a running single-broker Kafka cluster.
type Kafka struct {
	cluster *kfake.Cluster
	addr    string
	once    sync.Once
}

// StartKafka starts a broker and creates cfg.Topics. ctx bounds only the
// start; the broker runs until Close. Topics are not created on demand, as
// in a production cluster with auto-creation off: whoever needs one creates
// it.
func StartKafka(ctx context.Context, cfg KafkaConfig) (*Kafka, error) {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(cfg.Port),
		kfake.ClusterID("rcm-dev"),
		kfake.WithLogger(kafkaLogger{cfg.Logger}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start kafka on port %d: %w", cfg.Port, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) != 1 {
		c.Close()
		return nil, fmt.Errorf("start kafka: listening on %v, want one address", addrs)
	}
	k := &Kafka{cluster: c, addr: addrs[0]}
	if len(cfg.Topics) > 0 {
		if err := k.createTopics(ctx, cfg.Topics); err != nil {
			k.Close()
			return nil, err
		}
	}
	return k, nil
}

func (k *Kafka) createTopics(ctx context.Context, topics []kafkax.Topic) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.addr))
	if err != nil {
		return fmt.Errorf("kafka admin client: %w", err)
	}
	defer cl.Close()
	return kafkax.EnsureTopics(ctx, cl, topics...)
}

// Addr is the broker's address, "127.0.0.1:PORT".
func (k *Kafka) Addr() string { return k.addr }

// Close stops the broker, drops every client connection and, with a data
// directory, writes the state the next start reloads. It is safe to call
// more than once.
func (k *Kafka) Close() { k.once.Do(k.cluster.Close) }

// kafkaLogger forwards kfake's errors to an slog logger.
type kafkaLogger struct{ l *slog.Logger }

func (kl kafkaLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	if kl.l == nil || level != kfake.LogLevelError {
		return
	}
	kl.l.Error("kafka broker: "+fmt.Sprintf(msg, args...), slog.String("component", "kfake"))
}
