// Package kafkax builds the platform's Kafka clients: seed brokers, kprom
// metrics and kotel traces on every client, an slog adapter, and topic
// creation.
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// Conn says how to reach a cluster: its seed brokers, and the TLS and SASL
// options a secured cluster needs.
type Conn struct {
	Brokers  []string
	Security []kgo.Opt
}

// ConnFromEnv reads RCM_KAFKA_BROKERS (default 127.0.0.1:9092, the local
// stack) and the security variables of Security.
func ConnFromEnv(getenv func(string) string) (Conn, error) {
	c := Conn{Brokers: Brokers(getenv("RCM_KAFKA_BROKERS"))}
	if len(c.Brokers) == 0 {
		c.Brokers = []string{"127.0.0.1:9092"}
	}
	var err error
	c.Security, err = Security(getenv)
	return c, err
}

// Brokers splits a comma-separated broker list.
func Brokers(list string) []string {
	var out []string
	for _, b := range strings.Split(list, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// NewClient returns a client of brokers named clientID, with logging,
// franz-go's kprom metrics registered on reg under the rcm_kafka namespace
// and labelled client_id=clientID, with its requests counted by type
// (rcm_kafka_requests_total), and kotel's tracing hooks, plus opts.
// Each client gets its own hooks: a kprom hook serves one client.
func NewClient(conn Conn, clientID string, reg prometheus.Registerer, logger *slog.Logger, opts ...kgo.Opt) (*kgo.Client, error) {
	labelled := prometheus.WrapRegistererWith(prometheus.Labels{"client_id": clientID}, reg)
	metrics := kprom.NewMetrics("rcm_kafka",
		kprom.Registerer(withoutMisnamedGauges{labelled}),
		kprom.Histograms(kprom.ReadTime, kprom.ReadWait, kprom.WriteTime, kprom.WriteWait, kprom.RequestDurationE2E))
	all := append([]kgo.Opt{
		kgo.SeedBrokers(conn.Brokers...),
		kgo.ClientID(clientID),
		kgo.WithHooks(metrics, newRequestCounts(labelled)),
		kgo.WithHooks(traceHooks(clientID)...),
		kgo.WithLogger(slogLogger{logger.With(slog.String("kafka_client", clientID))}),
		// Notice a restarted or moved broker quickly.
		kgo.MetadataMinAge(time.Second),
		kgo.MetadataMaxAge(30 * time.Second),
		// Brokers that ask for client metrics would get them on every
		// close too, which then waits for a broker that may be gone.
		kgo.DisableClientMetrics(),
	}, conn.Security...)
	all = append(all, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		return nil, fmt.Errorf("kafka client %s: %w", clientID, err)
	}
	// kprom's two buffered-records gauges end in _total, which Prometheus
	// reserves for counters; they are exposed under conforming names.
	labelled.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rcm_kafka_buffered_produce_records", Help: "Records buffered within the client ready to be produced.",
		}, func() float64 { return float64(cl.BufferedProduceRecords()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rcm_kafka_buffered_fetch_records", Help: "Records buffered within the client ready to be consumed.",
		}, func() float64 { return float64(cl.BufferedFetchRecords()) }),
	)
	return cl, nil
}

// withoutMisnamedGauges drops kprom's gauges whose names end in _total.
type withoutMisnamedGauges struct{ prometheus.Registerer }

func (r withoutMisnamedGauges) misnamed(c prometheus.Collector) bool {
	ch := make(chan *prometheus.Desc, 8)
	go func() { c.Describe(ch); close(ch) }()
	bad := false
	for d := range ch {
		s := d.String()
		if strings.Contains(s, `"rcm_kafka_buffered_fetch_records_total"`) || strings.Contains(s, `"rcm_kafka_buffered_produce_records_total"`) {
			bad = true
		}
	}
	return bad
}

func (r withoutMisnamedGauges) Register(c prometheus.Collector) error {
	if r.misnamed(c) {
		return nil
	}
	return r.Registerer.Register(c)
}

func (r withoutMisnamedGauges) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// GroupOpts are the options of a consumer-group member that commits by
// hand after durable work (see ConsumeLoop): ConsumeLoop learns from them
// when a rebalance waits for it, and then stops retrying. A member that dies without
// leaving is noticed after the session timeout; instanceID, when set,
// makes the member static (KIP-345), so that the same process restarted
// takes its partitions back at once instead of waiting for that timeout.
func GroupOpts(group, topic, instanceID string, sessionTimeout time.Duration) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsCallbackBlocked(signalRebalance),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.SessionTimeout(sessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, sessionTimeout/4)),
	}
	if instanceID != "" {
		opts = append(opts, kgo.InstanceID(instanceID))
	}
	return opts
}

// Topic is a topic to create if missing.
type Topic struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
}

// EnsureTopics creates the topics that do not exist yet. Existing topics are
// left as they are.
func EnsureTopics(ctx context.Context, cl *kgo.Client, topics ...Topic) error {
	adm := kadm.NewClient(cl)
	for _, t := range topics {
		res, err := adm.CreateTopic(ctx, t.Partitions, 1, t.Configs, t.Name)
		if err == nil {
			err = res.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t.Name, err)
		}
	}
	return nil
}

type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case s.l.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelDebug
	case s.l.Enabled(ctx, slog.LevelInfo):
		// franz-go's info level narrates every rebalance; keep it at warn.
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (s slogLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var l slog.Level
	switch level {
	case kgo.LogLevelError:
		l = slog.LevelError
	case kgo.LogLevelWarn:
		l = slog.LevelWarn
	case kgo.LogLevelInfo:
		l = slog.LevelInfo
	default:
		l = slog.LevelDebug
	}
	s.l.Log(context.Background(), l, msg, keyvals...)
}
