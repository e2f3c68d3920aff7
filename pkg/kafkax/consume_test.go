package kafkax_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m)) }

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consume runs ConsumeLoop on a new member of group until the test ends.
func consume(t *testing.T, group, topic string, handle kafkax.BatchHandler, opts ...kafkax.LoopOption) {
	t.Helper()
	member(t, group, topic, func(ctx context.Context, cl *kgo.Client, logger *slog.Logger) {
		_ = kafkax.ConsumeLoop(ctx, cl, 5, handle, logger, opts...)
	})
}

// member runs loop on a new member of group, polling 5 records at a time,
// until the test ends.
func member(t *testing.T, group, topic string, loop func(ctx context.Context, cl *kgo.Client, logger *slog.Logger)) {
	t.Helper()
	cl := kafkatest.Client(t, append(kafkax.GroupOpts(group, topic, "", 6*time.Second), kgo.RebalanceTimeout(30*time.Second))...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		loop(ctx, cl, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestRetriesGiveWayToARebalance: while every batch fails, a member that
// joins gets partitions well within the rebalance timeout (the failing
// member stops retrying when the rebalance waits), and once the failure
// is over every record of every partition is handled and committed:
// giving up a batch skipped none.
func TestRetriesGiveWayToARebalance(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		staged bool
		opts   []kafkax.LoopOption
	}{
		{"one partition at a time", false, nil},
		{"partitions at once", false, []kafkax.LoopOption{kafkax.PartitionsAtOnce(2)}},
		{"prepared ahead", true, nil},
		{"prepared ahead, partitions at once", true, []kafkax.LoopOption{kafkax.PartitionsAtOnce(2)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			retriesGiveWayToARebalance(t, c.staged, c.opts)
		})
	}
}

// retriesGiveWayToARebalance runs TestRetriesGiveWayToARebalance, with
// ConsumeStaged if staged: the members then hold the next fetch prepared
// while a batch fails, and give it up for the rebalance.
func retriesGiveWayToARebalance(t *testing.T, staged bool, opts []kafkax.LoopOption) {
	const perPartition = 40
	topic := kafkatest.NewTopic(t, 2)
	producer := kafkatest.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var recs []*kgo.Record
	for p := range int32(2) {
		for i := range perPartition {
			recs = append(recs, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "%d/%d", p, i)})
		}
	}
	if err := producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	var failing atomic.Bool
	failing.Store(true)
	var mu sync.Mutex
	handled := map[int32]map[int64]bool{0: {}, 1: {}}
	complete := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled[0]) == perPartition && len(handled[1]) == perPartition
	}
	member := func(calls *atomic.Int64) kafkax.BatchHandler {
		return func(_ context.Context, _ string, p int32, rs []*kgo.Record) error {
			calls.Add(1)
			if failing.Load() {
				return errors.New("store unavailable")
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range rs {
				handled[p][r.Offset] = true
			}
			return nil
		}
	}
	group := "g-" + topic
	var first, second atomic.Int64
	start := func(h kafkax.BatchHandler) {
		if !staged {
			consume(t, group, topic, h, opts...)
			return
		}
		consumeStaged(t, group, topic, kafkax.Stages{
			Prepare: func(_ string, _ int32, rs []*kgo.Record) any { return offsetsOf(rs) },
			Write: func(ctx context.Context, topic string, p int32, rs []*kgo.Record, prepared any) error {
				if !slices.Equal(prepared.([]int64), offsetsOf(rs)) {
					return fmt.Errorf("batch %v written with what %v prepared", offsetsOf(rs), prepared)
				}
				return h(ctx, topic, p, rs)
			},
		}, opts...)
	}
	start(member(&first))
	eventually(t, 10*time.Second, "the first member fails a batch", func() bool { return first.Load() >= 2 })

	joined := time.Now()
	start(member(&second))
	eventually(t, 10*time.Second, "the second member gets a partition (rebalance timeout 30s)", func() bool { return second.Load() > 0 })
	t.Logf("the second member got a partition %s after joining", time.Since(joined).Round(time.Millisecond))

	failing.Store(false)
	eventually(t, 30*time.Second, "every record handled", complete)
	adm := kadm.NewClient(producer)
	eventually(t, 10*time.Second, "every record committed", func() bool {
		offs, err := adm.FetchOffsets(context.Background(), group)
		if err != nil {
			return false
		}
		for p := range int32(2) {
			o, ok := offs.Lookup(topic, p)
			if !ok || o.At != perPartition {
				return false
			}
		}
		return true
	})
}

// TestPartitionsAtOnce: with PartitionsAtOnce(3) the batches of a fetch's
// three partitions are handled at the same time, each partition's in
// order, and every record is committed once handled.
func TestPartitionsAtOnce(t *testing.T) {
	t.Parallel()
	const partitions, perPartition = 3, 1 // within one poll of the loop's 5 records
	topic := kafkatest.NewTopic(t, partitions)
	producer := kafkatest.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var recs []*kgo.Record
	for p := range int32(partitions) {
		for i := range perPartition {
			recs = append(recs, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "%d/%d", p, i)})
		}
	}
	if err := producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		inFlight int
		most     int
		next     = map[int32]int64{}
		order    error
		under    int // the most writes of its fetch a handler saw under way
		noWrites bool
	)
	handle := func(ctx context.Context, _ string, p int32, rs []*kgo.Record) error {
		peers := kafkax.WritesOf(ctx)
		mu.Lock()
		noWrites = noWrites || peers == nil
		inFlight++
		most = max(most, inFlight)
		for _, r := range rs {
			if r.Offset != next[p] && order == nil {
				order = fmt.Errorf("partition %d: offset %d, want %d", p, r.Offset, next[p])
			}
			next[p] = r.Offset + 1
		}
		mu.Unlock()
		// Wait, with a bound, for the other partitions' batches to be
		// in flight too.
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			all := most == partitions
			if peers != nil {
				n, _ := peers.UnderWay()
				under = max(under, n)
			}
			mu.Unlock()
			if all {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil
	}
	group := "g-" + topic
	consume(t, group, topic, handle, kafkax.PartitionsAtOnce(partitions))
	adm := kadm.NewClient(producer)
	eventually(t, 20*time.Second, "every record committed", func() bool {
		offs, err := adm.FetchOffsets(context.Background(), group)
		if err != nil {
			return false
		}
		for p := range int32(partitions) {
			if o, ok := offs.Lookup(topic, p); !ok || o.At != perPartition {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	// The writes of a fetch under way at once are counted for them.
	if noWrites || under != partitions {
		t.Errorf("handlers saw at most %d writes of their fetch under way (WritesOf nil: %v), want %d", under, noWrites, partitions)
	}
	if order != nil {
		t.Error(order)
	}
	if most != partitions {
		t.Errorf("at most %d partitions handled at once, want %d", most, partitions)
	}
}
