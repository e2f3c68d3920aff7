package kafkax_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consumeStaged runs ConsumeStaged on a new member of group until the
// test ends.
func consumeStaged(t *testing.T, group, topic string, s kafkax.Stages, opts ...kafkax.LoopOption) {
	t.Helper()
	member(t, group, topic, func(ctx context.Context, cl *kgo.Client, logger *slog.Logger) {
		_ = kafkax.ConsumeStaged(ctx, cl, 5, s, logger, opts...)
	})
}

// offsetsOf returns the offsets of records.
func offsetsOf(rs []*kgo.Record) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.Offset
	}
	return out
}

// TestPrepareRunsAheadOfTheWrite: while the write of a fetch is under
// way, the next fetch is polled and prepared; it is written only after
// the first, with what its own preparation made, and every record is
// written once, in offset order, and committed.
func TestPrepareRunsAheadOfTheWrite(t *testing.T) {
	t.Parallel()
	const records = 10 // two fetches of the loop's 5 records at least
	topic := kafkatest.NewTopic(t, 1)
	producer := kafkatest.Client(t, kgo.DefaultProduceTopic(topic))
	var recs []*kgo.Record
	for i := range records {
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, "%d", i)})
	}
	if err := producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	var (
		mu       sync.Mutex
		prepared [][]int64 // the offsets of each batch prepared, in order
		written  []int64
		problems []string
	)
	// aheadOfFirstWrite is closed when a batch after the first is
	// prepared: the first write waits for it, with a bound.
	aheadOfFirstWrite := make(chan struct{})
	var once sync.Once
	s := kafkax.Stages{
		Prepare: func(_ string, _ int32, rs []*kgo.Record) any {
			mu.Lock()
			defer mu.Unlock()
			prepared = append(prepared, offsetsOf(rs))
			if len(prepared) > 1 {
				once.Do(func() { close(aheadOfFirstWrite) })
			}
			return offsetsOf(rs)
		},
		Write: func(_ context.Context, _ string, _ int32, rs []*kgo.Record, p any) error {
			mu.Lock()
			first := len(written) == 0
			mu.Unlock()
			if first {
				select {
				case <-aheadOfFirstWrite:
				case <-time.After(3 * time.Second):
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(p.([]int64), offsetsOf(rs)) {
				problems = append(problems, fmt.Sprintf("batch %v written with what %v prepared", offsetsOf(rs), p))
			}
			for _, r := range rs {
				if r.Offset != int64(len(written)) {
					problems = append(problems, fmt.Sprintf("offset %d written after %d", r.Offset, len(written)))
				}
				written = append(written, r.Offset)
			}
			if first && len(prepared) < 2 {
				problems = append(problems, "the next batch was not prepared while the first was written")
			}
			return nil
		},
	}
	group := "g-" + topic
	consumeStaged(t, group, topic, s)
	adm := kadm.NewClient(producer)
	eventually(t, 20*time.Second, "every record committed", func() bool {
		offs, err := adm.FetchOffsets(context.Background(), group)
		if err != nil {
			return false
		}
		o, ok := offs.Lookup(topic, 0)
		return ok && o.At == records
	})
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	if len(written) != records {
		t.Errorf("%d records written, want %d", len(written), records)
	}
}
