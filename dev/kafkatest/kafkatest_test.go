package kafkatest

import (
	"context"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// consume polls cl until it has n records.
func consume(t *testing.T, cl *kgo.Client, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %v, want %d records: %v", got, n, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

func TestNewTopicIsFreshAndUsable(t *testing.T) {
	t.Parallel()
	a, b := NewTopic(t, 3), NewTopic(t, 1)
	if a == b {
		t.Fatalf("two topics named %q", a)
	}
	legal := regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
	for _, name := range []string{a, b} {
		if !legal.MatchString(name) {
			t.Fatalf("topic name %q is not a legal Kafka topic name", name)
		}
	}
	details, err := kadm.NewClient(Client(t)).ListTopics(t.Context(), a, b)
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	if got := len(details[a].Partitions); got != 3 {
		t.Fatalf("%s has %d partitions, want 3", a, got)
	}
	if got := len(details[b].Partitions); got != 1 {
		t.Fatalf("%s has %d partitions, want 1", b, got)
	}

	cl := Client(t, kgo.DefaultProduceTopic(a), kgo.ConsumeTopics(a))
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Key: []byte("org_1"), Value: []byte("hello")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if got := consume(t, cl, 1); got[0] != "hello" {
		t.Fatalf("consumed %v, want [hello]", got)
	}
}

func TestTopicIsDeletedWithItsTest(t *testing.T) {
	var name string
	t.Run("owner", func(t *testing.T) { name = NewTopic(t, 1) })
	topics, err := kadm.NewClient(Client(t)).ListTopics(t.Context())
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	if topics.Has(name) {
		t.Fatalf("topic %s still exists after its test ended", name)
	}
}

func TestSharedBrokerIsStartedOnce(t *testing.T) {
	t.Parallel()
	a, b := Brokers(t), Brokers(t)
	if len(a) == 0 || !slices.Equal(a, b) {
		t.Fatalf("Brokers() = %v then %v, want the same non-empty list", a, b)
	}
	if os.Getenv(EnvBrokers) == "" && shared.kafka == nil {
		t.Fatal("no embedded broker, and no real one configured")
	}
}

// A fault test stops its own broker, and clients of it carry on once it is
// back, with the records it had.
func TestRestartableBroker(t *testing.T) {
	t.Parallel()
	b := Restartable(t, kafkax.Topic{Name: "events", Partitions: 2})
	if shared := Brokers(t); slices.Equal(b.Brokers(), shared) {
		t.Fatalf("Restartable returned the shared broker %v", shared)
	}
	addr := b.Addr()
	cl := b.Client(t, kgo.DefaultProduceTopic("events"))
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	b.Stop()
	b.Stop() // twice is harmless
	if b.Running() {
		t.Fatal("Running() after Stop = true")
	}
	// Produced while the broker is down: buffered, delivered once it is back.
	done := make(chan error, 1)
	cl.Produce(context.Background(), &kgo.Record{Value: []byte("during")}, func(_ *kgo.Record, err error) { done <- err })

	if err := b.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if b.Addr() != addr {
		t.Fatalf("Addr() after restart = %s, want %s", b.Addr(), addr)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("produce across the outage: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("produce across the outage: no answer within 15s")
	}
	if err := b.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	reader := b.Client(t, kgo.ConsumeTopics("events"))
	got := consume(t, reader, 2)
	slices.Sort(got)
	if !slices.Equal(got, []string{"before", "during"}) {
		t.Fatalf("records after restarts = %v, want before and during", got)
	}
}

func TestTopicName(t *testing.T) {
	tests := []struct {
		name, test string
		want       *regexp.Regexp
	}{
		{"plain", "TestX", regexp.MustCompile(`^test\.testx\.[0-9a-f]{6}-\d+$`)},
		{"subtest with spaces", "TestX/a_b c", regexp.MustCompile(`^test\.testx-a-b-c\.[0-9a-f]{6}-\d+$`)},
		{"long", "Test" + string(make([]byte, 300)), regexp.MustCompile(`^test\.test-{96}\.[0-9a-f]{6}-\d+$`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := topicName(tc.test); !tc.want.MatchString(got) {
				t.Fatalf("topicName(%q) = %q, want match of %s", tc.test, got, tc.want)
			}
		})
	}
}
