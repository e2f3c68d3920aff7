package embedded

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func startKafka(t testing.TB, cfg KafkaConfig) *Kafka {
	t.Helper()
	k, err := StartKafka(t.Context(), cfg)
	if err != nil {
		t.Fatalf("StartKafka: %v", err)
	}
	t.Cleanup(k.Close)
	return k
}

func kafkaClient(t testing.TB, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(addr),
		// Notice a restarted broker quickly.
		kgo.MetadataMinAge(100 * time.Millisecond),
		// A partition assigned while a fetch is in flight waits for that
		// fetch; keep the wait short.
		kgo.FetchMaxWait(200 * time.Millisecond),
		// Closing a client whose broker is gone would wait a second for
		// its final client-metrics push.
		kgo.DisableClientMetrics(),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
	}, opts...)...)
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// pollValues polls cl until it has n records and returns their values.
func pollValues(t testing.TB, cl *kgo.Client, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("polled %v, want %d records: %v", got, n, ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Logf("fetch %s/%d: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

func topicPartitions(t testing.TB, addr string) map[string]int {
	t.Helper()
	adm := kadm.NewClient(kafkaClient(t, addr))
	details, err := adm.ListTopics(t.Context())
	if err != nil {
		t.Fatalf("list topics: %v", err)
	}
	got := map[string]int{}
	for name, d := range details {
		got[name] = len(d.Partitions)
	}
	return got
}

func TestKafkaInMemory(t *testing.T) {
	k := startKafka(t, KafkaConfig{Topics: []kafkax.Topic{{Name: "events", Partitions: 3}}})
	host, port, err := net.SplitHostPort(k.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addr() = %q, want 127.0.0.1:<port>", k.Addr())
	}
	if got := topicPartitions(t, k.Addr()); got["events"] != 3 || len(got) != 1 {
		t.Fatalf("topics = %v, want events with 3 partitions", got)
	}
	cl := kafkaClient(t, k.Addr(), kgo.ConsumeTopics("events"))
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: "events", Value: []byte("v1")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if got := pollValues(t, cl, 1); got[0] != "v1" {
		t.Fatalf("consumed %v, want [v1]", got)
	}
	k.Close()
	k.Close() // twice is harmless
}

func TestKafkaPortInUse(t *testing.T) {
	k := startKafka(t, KafkaConfig{})
	_, port, _ := net.SplitHostPort(k.Addr())
	var p int
	fmt.Sscan(port, &p)
	if k2, err := StartKafka(t.Context(), KafkaConfig{Port: p}); err == nil {
		k2.Close()
		t.Fatalf("second broker on port %d: got no error, want address in use", p)
	}
}

// A broker restarted on the same port and data directory still has its
// topics, its records and its groups' committed offsets, and the clients
// of the old broker carry on with the new one.
func TestKafkaPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	topics := []kafkax.Topic{{Name: "rcm.campaign-events.v1", Partitions: 2}}
	k := startKafka(t, KafkaConfig{DataDir: dir, Topics: topics})
	addr := k.Addr()
	_, portStr, _ := net.SplitHostPort(addr)
	var port int
	fmt.Sscan(portStr, &port)

	const topic, group = "rcm.campaign-events.v1", "rcm-compliance"
	producer := kafkaClient(t, addr, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for _, v := range []string{"first", "second"} {
		if err := producer.ProduceSync(t.Context(), &kgo.Record{Value: []byte(v), Partition: 0}).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", v, err)
		}
	}

	// A group member reads "first" and commits past it, then leaves.
	member := kafkaClient(t, addr, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.DisableAutoCommit())
	pollCtx, cancelPoll := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancelPoll()
	// One record only: a commit covers everything polled.
	var first []*kgo.Record
	for len(first) == 0 && pollCtx.Err() == nil {
		first = member.PollRecords(pollCtx, 1).Records()
	}
	if len(first) != 1 || string(first[0].Value) != "first" {
		t.Fatalf("group read %v, want the record first", first)
	}
	if err := member.CommitUncommittedOffsets(t.Context()); err != nil {
		t.Fatalf("commit: %v", err)
	}
	member.Close()

	k.Close()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("dial %s after Close: connected, want refused", addr)
	}

	// Same port, same directory; topics are created again without error.
	k2 := startKafka(t, KafkaConfig{Port: port, DataDir: dir, Topics: append(topics, kafkax.Topic{Name: "documents.v1", Partitions: 4})})
	if k2.Addr() != addr {
		t.Fatalf("restarted Addr() = %q, want %q", k2.Addr(), addr)
	}
	if got := topicPartitions(t, addr); got[topic] != 2 || got["documents.v1"] != 4 {
		t.Fatalf("topics after restart = %v, want %s:2 and documents.v1:4", got, topic)
	}

	// Every record is still there.
	reader := kafkaClient(t, addr, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if got := strings.Join(pollValues(t, reader, 2), ","); got != "first,second" {
		t.Fatalf("records after restart = %s, want first,second", got)
	}
	// The group's commit survived.
	offsets, err := kadm.NewClient(reader).FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	if o, ok := offsets.Lookup(topic, 0); !ok || o.Err != nil || o.At != 1 {
		t.Fatalf("committed offset of %s/0 = %+v (found %v), want 1", topic, o, ok)
	}
	// A member of the group resumes after "first".
	resumed := kafkaClient(t, addr, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group))
	if got := pollValues(t, resumed, 1); got[0] != "second" {
		t.Fatalf("group resumed at %v, want [second]", got)
	}
	// The producer of the old broker produces to the new one.
	ctx, cancel2 := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel2()
	if err := producer.ProduceSync(ctx, &kgo.Record{Value: []byte("third"), Partition: 0}).FirstErr(); err != nil {
		t.Fatalf("produce after restart with the old client: %v", err)
	}
}
