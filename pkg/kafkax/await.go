package kafkax

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ProduceAwaitGroup produces records synchronously and then waits until
// consumer group has committed offsets past every one of them, that is,
// until the group's consumer has processed them. It is how a script knows
// that a service has applied what it published.
func ProduceAwaitGroup(ctx context.Context, cl *kgo.Client, group string, records ...*kgo.Record) error {
	res := cl.ProduceSync(ctx, records...)
	if err := res.FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	want := map[string]map[int32]int64{}
	for _, r := range res {
		if want[r.Record.Topic] == nil {
			want[r.Record.Topic] = map[int32]int64{}
		}
		if r.Record.Offset+1 > want[r.Record.Topic][r.Record.Partition] {
			want[r.Record.Topic][r.Record.Partition] = r.Record.Offset + 1
		}
	}
	adm := kadm.NewClient(cl)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		offsets, err := adm.FetchOffsets(ctx, group)
		if err == nil && committedPast(offsets, want) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for group %s to process: %w", group, ctx.Err())
		case <-tick.C:
		}
	}
}

func committedPast(got kadm.OffsetResponses, want map[string]map[int32]int64) bool {
	for topic, parts := range want {
		for p, off := range parts {
			o, ok := got.Lookup(topic, p)
			if !ok || o.Err != nil || o.At < off {
				return false
			}
		}
	}
	return true
}
