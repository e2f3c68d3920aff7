package kafkax_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// heldCommits is a broker of one test that holds every OffsetCommit it
// receives while hold is set, until release is closed (or a bound passes),
// and counts the commits it has answered.
type heldCommits struct {
	cluster  *kfake.Cluster
	hold     atomic.Bool
	release  chan struct{}
	held     atomic.Int64
	answered atomic.Int64
}

func newHeldCommits(t *testing.T, topic string) *heldCommits {
	t.Helper()
	return newHeldCommitsN(t, topic, 1)
}

func newHeldCommitsN(t *testing.T, topic string, partitions int32) *heldCommits {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	h := &heldCommits{cluster: c, release: make(chan struct{})}
	c.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if h.hold.Load() {
			h.held.Add(1)
			// OffsetCommit shares its connection with heartbeats and
			// metadata only; fetches go on their own.
			c.SleepControl(func() {
				select {
				case <-h.release:
				case <-time.After(15 * time.Second):
				}
			})
		}
		h.answered.Add(1)
		return nil, nil, false // then answer it as usual
	})
	return h
}

func (h *heldCommits) client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(h.cluster.ListenAddrs()...),
		kgo.FetchMaxWait(250 * time.Millisecond),
		kgo.DisableClientMetrics(),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestSlowCommitDoesNotDelayTheNextBatch: while the commit of a handled
// batch is in flight, the next records are fetched and handled; the
// offsets of both are committed once the broker answers, in order.
func TestSlowCommitDoesNotDelayTheNextBatch(t *testing.T) {
	t.Parallel()
	const topic = "slow-commit"
	h := newHeldCommits(t, topic)
	producer := h.client(t, kgo.DefaultProduceTopic(topic))
	consumer := h.client(t, append(kafkax.GroupOpts("g", topic, "", 6*time.Second), kgo.RebalanceTimeout(30*time.Second))...)

	var handled atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = kafkax.ConsumeLoop(ctx, consumer, 5, func(_ context.Context, _ string, _ int32, rs []*kgo.Record) error {
			handled.Add(int64(len(rs)))
			return nil
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done })
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	})

	h.hold.Store(true)
	if err := producer.ProduceSync(context.Background(), &kgo.Record{Value: []byte("first")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first record handled and its commit held", func() bool {
		return handled.Load() == 1 && h.held.Load() == 1
	})
	if err := producer.ProduceSync(context.Background(), &kgo.Record{Value: []byte("second")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the second record handled while the first commit is held", func() bool {
		return handled.Load() == 2
	})
	if n := h.answered.Load(); n != 0 {
		t.Fatalf("%d commits answered while held", n)
	}

	h.hold.Store(false)
	close(h.release)
	adm := kadm.NewClient(producer)
	eventually(t, 10*time.Second, "both records committed", func() bool {
		offs, err := adm.FetchOffsets(context.Background(), "g")
		if err != nil {
			return false
		}
		o, ok := offs.Lookup(topic, 0)
		return ok && o.At == 2
	})
}

// loops are the two poll loops, each running handle: ConsumeLoop, and
// ConsumeStaged with a preparation that handle's records are checked
// against (the next fetch then polled and prepared while one is handled).
var loops = []struct {
	name string
	run  func(ctx context.Context, cl *kgo.Client, handle kafkax.BatchHandler) error
}{
	{"ConsumeLoop", func(ctx context.Context, cl *kgo.Client, handle kafkax.BatchHandler) error {
		return kafkax.ConsumeLoop(ctx, cl, 5, handle, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}},
	{"ConsumeStaged", func(ctx context.Context, cl *kgo.Client, handle kafkax.BatchHandler) error {
		return kafkax.ConsumeStaged(ctx, cl, 5, kafkax.Stages{
			Prepare: func(_ string, _ int32, rs []*kgo.Record) any { return offsetsOf(rs) },
			Write: func(ctx context.Context, topic string, p int32, rs []*kgo.Record, prepared any) error {
				if !slices.Equal(prepared.([]int64), offsetsOf(rs)) {
					return fmt.Errorf("batch %v written with what %v prepared", offsetsOf(rs), prepared)
				}
				return handle(ctx, topic, p, rs)
			},
		}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}},
}

// TestShutdownWaitsForTheCommitInFlight: a loop told to stop while the
// commit of its last batch is in flight returns only once that commit is
// answered, so the client closed after it does not drop the offsets.
func TestShutdownWaitsForTheCommitInFlight(t *testing.T) {
	t.Parallel()
	for _, l := range loops {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			shutdownWaitsForTheCommitInFlight(t, "shutdown-commit-"+l.name, l.run)
		})
	}
}

func shutdownWaitsForTheCommitInFlight(t *testing.T, topic string, run func(context.Context, *kgo.Client, kafkax.BatchHandler) error) {
	h := newHeldCommits(t, topic)
	producer := h.client(t, kgo.DefaultProduceTopic(topic))
	consumer := h.client(t, append(kafkax.GroupOpts("g", topic, "", 6*time.Second), kgo.RebalanceTimeout(30*time.Second))...)

	var handled atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = run(ctx, consumer, func(_ context.Context, _ string, _ int32, rs []*kgo.Record) error {
			handled.Add(int64(len(rs)))
			return nil
		})
	}()

	h.hold.Store(true)
	if err := producer.ProduceSync(context.Background(), &kgo.Record{Value: []byte("only")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the record handled and its commit held", func() bool {
		return handled.Load() == 1 && h.held.Load() == 1
	})
	cancel()
	// The broker answers the commit a little after the stop.
	time.AfterFunc(300*time.Millisecond, func() { close(h.release) })
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the loop did not return")
	}
	if n := h.answered.Load(); n != 1 {
		t.Fatalf("the loop returned with %d commits answered, want 1", n)
	}
	offs, err := kadm.NewClient(producer).FetchOffsets(context.Background(), "g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup(topic, 0); !ok || o.At != 1 {
		t.Fatalf("committed offset %+v (found %v), want 1", o.At, ok)
	}
}

// TestRebalanceWaitsForTheCommitInFlight: a member that joins while the
// first member's commit is in flight gets its partition only with that
// commit in place: it does not handle the records handled before.
func TestRebalanceWaitsForTheCommitInFlight(t *testing.T) {
	t.Parallel()
	for _, l := range loops {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			rebalanceWaitsForTheCommitInFlight(t, "rebalance-commit-"+l.name, l.run)
		})
	}
}

func rebalanceWaitsForTheCommitInFlight(t *testing.T, topic string, run func(context.Context, *kgo.Client, kafkax.BatchHandler) error) {
	h := newHeldCommitsN(t, topic, 2)
	producer := h.client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var mu sync.Mutex
	seen := map[string]int{} // "partition/offset" → times handled
	var firstCalls, secondCalls atomic.Int64
	member := func(calls *atomic.Int64) {
		cl := h.client(t, append(kafkax.GroupOpts("g", topic, "", 6*time.Second), kgo.RebalanceTimeout(30*time.Second))...)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = run(ctx, cl, func(_ context.Context, _ string, p int32, rs []*kgo.Record) error {
				calls.Add(1)
				mu.Lock()
				defer mu.Unlock()
				for _, r := range rs {
					seen[fmt.Sprintf("%d/%d", p, r.Offset)]++
				}
				return nil
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	produce := func(value string) {
		t.Helper()
		if err := producer.ProduceSync(context.Background(),
			&kgo.Record{Partition: 0, Value: []byte(value)}, &kgo.Record{Partition: 1, Value: []byte(value)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
	})

	member(&firstCalls)
	h.hold.Store(true)
	produce("before")
	eventually(t, 10*time.Second, "both records handled and their commit held", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 2 && h.held.Load() >= 1
	})
	member(&secondCalls)
	// The broker answers the commit a little after the join.
	time.AfterFunc(300*time.Millisecond, func() { h.hold.Store(false); close(h.release) })
	produced := 1
	eventually(t, 20*time.Second, "the second member handles a partition", func() bool {
		produce("after")
		produced++
		return secondCalls.Load() > 0
	})
	eventually(t, 10*time.Second, "every record handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 2*produced
	})
	mu.Lock()
	defer mu.Unlock()
	for k, n := range seen {
		if n != 1 {
			t.Errorf("record %s handled %d times, want once", k, n)
		}
	}
}
