// Package kafkatest owns the Kafka side of tests: one broker per test
// binary, started on first use (the embedded kfake broker, or the real
// cluster named by RCM_TEST_KAFKA_BROKERS), a fresh topic per test, clients
// closed with the test, and private brokers that fault tests may stop and
// start again.
//
// A test binary that uses it closes the shared broker from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }
package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/embedded"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EnvBrokers names the environment variable that points the tests at a real
// cluster (a comma-separated broker list) instead of the embedded broker.
const EnvBrokers = "RCM_TEST_KAFKA_BROKERS"

// shared is the broker of this test binary.
var shared struct {
	once    sync.Once
	mu      sync.Mutex
	brokers []string
	kafka   *embedded.Kafka // nil when EnvBrokers is set
	dir     string
	err     error
	closed  bool
}

// runID keeps topic names of concurrent test binaries on one real cluster
// apart.
var runID = func() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

var topicSeq atomic.Int64

func startShared() {
	if list := os.Getenv(EnvBrokers); list != "" {
		shared.brokers = kafkax.Brokers(list)
		return
	}
	dir, err := os.MkdirTemp("", "rcm-kafkatest-")
	if err != nil {
		shared.err = err
		return
	}
	k, err := embedded.StartKafka(context.Background(), embedded.KafkaConfig{DataDir: dir})
	if err != nil {
		_ = os.RemoveAll(dir)
		shared.err = err
		return
	}
	shared.kafka, shared.dir, shared.brokers = k, dir, []string{k.Addr()}
}

// Brokers returns the seed brokers of the test binary's broker, starting
// the embedded one on first use.
func Brokers(t testing.TB) []string {
	t.Helper()
	shared.once.Do(startShared)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	switch {
	case shared.err != nil:
		t.Fatalf("kafkatest: start broker: %v", shared.err)
	case shared.closed:
		t.Fatal("kafkatest: broker used after Close")
	}
	return shared.brokers
}

// Close stops the embedded broker, if one was started, and removes its data.
// Main calls it after the tests.
func Close() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.closed {
		return
	}
	shared.closed = true
	if shared.kafka != nil {
		shared.kafka.Close()
		_ = os.RemoveAll(shared.dir)
	}
}

// Main runs the tests and then closes the shared broker; use it as
// os.Exit(kafkatest.Main(m)) in TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	Close()
	return code
}

// Client returns a client of the test binary's broker, closed when the test
// ends. Its defaults suit tests and fault tests: metadata refreshed within
// 250ms (a restarted broker is noticed quickly), fetches that wait at most
// 250ms (a partition assigned while a fetch is in flight is not left
// waiting for the default 5s), and no client-metrics push (which delays
// Close by a second when the broker is gone). opts come after them and
// win.
func Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return newClient(t, Brokers(t), opts...)
}

func newClient(t testing.TB, brokers []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.DisableClientMetrics(),
	}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// NewTopic creates a topic with a name no other test uses and deletes it
// when the test ends. It returns once every partition has a leader.
func NewTopic(t testing.TB, partitions int32) string {
	t.Helper()
	name := topicName(t.Name())
	adm := kadm.NewClient(newClient(t, Brokers(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Replication -1 takes the cluster's default, so the same call suits
	// kfake and a real three-broker cluster.
	res, err := adm.CreateTopic(ctx, partitions, -1, nil, name)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := adm.DeleteTopic(ctx, name)
		if err == nil {
			err = res.Err
		}
		if err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Errorf("kafkatest: delete topic %s: %v", name, err)
		}
	})
	if err := waitForLeaders(ctx, adm, name, partitions); err != nil {
		t.Fatalf("kafkatest: topic %s: %v", name, err)
	}
	return name
}

// FreshTopicName returns a topic name no other test uses, for a topic the
// code under test is to create itself, and deletes that topic, if it was
// created, when the test ends.
func FreshTopicName(t testing.TB) string {
	t.Helper()
	name := topicName(t.Name())
	adm := kadm.NewClient(newClient(t, Brokers(t)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := adm.DeleteTopic(ctx, name)
		if err == nil {
			err = res.Err
		}
		if err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Errorf("kafkatest: delete topic %s: %v", name, err)
		}
	})
	return name
}

// waitForLeaders polls until the topic's metadata shows partitions
// partitions, each with a leader: a real cluster creates topics
// asynchronously.
func waitForLeaders(ctx context.Context, adm *kadm.Client, topic string, partitions int32) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		details, err := adm.ListTopics(ctx, topic)
		if err == nil {
			if d, ok := details[topic]; ok && d.Err == nil && len(d.Partitions) == int(partitions) {
				ready := true
				for _, p := range d.Partitions {
					ready = ready && p.Err == nil && p.Leader >= 0
				}
				if ready {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("partitions without a leader: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// topicName turns a test name into a legal, unique topic name.
func topicName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := b.String()
	if len(s) > 100 {
		s = s[:100]
	}
	return fmt.Sprintf("test.%s.%s-%d", s, runID, topicSeq.Add(1))
}

// Broker is an embedded broker of one test, which it may stop and start
// again on the same address and data, as an outage would. It is always
// embedded, also when EnvBrokers is set: a real cluster cannot be stopped
// from a test.
type Broker struct {
	dir    string
	topics []kafkax.Topic

	mu   sync.Mutex
	port int
	k    *embedded.Kafka
}

// Restartable starts a private broker with topics, closed when the test
// ends.
func Restartable(t testing.TB, topics ...kafkax.Topic) *Broker {
	t.Helper()
	b := &Broker{dir: t.TempDir(), topics: topics}
	if err := b.Start(); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	t.Cleanup(b.Stop)
	return b
}

// Addr is the broker's address; it stays the same across restarts.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))
}

// Brokers is Addr as a seed list.
func (b *Broker) Brokers() []string { return []string{b.Addr()} }

// Client returns a client of this broker, closed when the test ends, with
// the defaults of the package-level Client.
func (b *Broker) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return newClient(t, b.Brokers(), opts...)
}

// Running reports whether the broker is up.
func (b *Broker) Running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.k != nil
}

// Stop stops the broker and drops its connections; its data stays. Stopping
// a stopped broker does nothing.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.k != nil {
		b.k.Close()
		b.k = nil
	}
}

// Start starts the broker again on its address with its data (the first
// start picks the port). Starting a running broker does nothing.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.k != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := embedded.StartKafka(ctx, embedded.KafkaConfig{Port: b.port, DataDir: b.dir, Topics: b.topics})
	if err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	if b.port == 0 {
		_, port, _ := net.SplitHostPort(k.Addr())
		b.port, _ = strconv.Atoi(port)
	}
	b.k = k
	return nil
}

// Restart stops the broker and starts it again.
func (b *Broker) Restart() error {
	b.Stop()
	return b.Start()
}
