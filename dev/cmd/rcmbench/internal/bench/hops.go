package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/load"
	"github.com/twmb/franz-go/pkg/kgo"
)

// activityTopic is the feed's internal topic of stored items, which every
// feed instance follows to fan them out.
const activityTopic = "rcm.activity.v1"

// activityTap follows the activity topic as a feed instance's hub does
// (no group, from now on) and records, for each event's item, when a feed
// published it (the record's timestamp, set by the feed's producer once
// the item is stored) and when it reached this follower. With the produce
// time of the event and the arrival at each subscriber, that splits
// publish → received into its hops.
type activityTap struct {
	cl *kgo.Client

	mu       sync.Mutex
	produced map[string]time.Time // event id -> the feed's produce of its item
	seen     map[string]time.Time // event id -> its arrival here
	done     chan struct{}
}

func (e *env) tapActivity(ctx context.Context) (*activityTap, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.stk.KafkaAddr()), kgo.ConsumeTopics(activityTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(time.Now().UnixMilli())), kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		return nil, err
	}
	t := &activityTap{cl: cl, produced: map[string]time.Time{}, seen: map[string]time.Time{}, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		for {
			fetches := cl.PollFetches(ctx)
			if fetches.IsClientClosed() || ctx.Err() != nil {
				return
			}
			now := time.Now()
			fetches.EachRecord(func(r *kgo.Record) {
				var it struct {
					ID string `json:"id"`
				}
				if json.Unmarshal(r.Value, &it) != nil {
					return
				}
				t.mu.Lock()
				if _, ok := t.seen[it.ID]; !ok {
					t.produced[it.ID], t.seen[it.ID] = r.Timestamp, now
				}
				t.mu.Unlock()
			})
		}
	}()
	return t, nil
}

func (t *activityTap) close() {
	t.cl.Close()
	<-t.done
}

// hops are one round's publish → received split at the activity topic:
// the event's produce to the feed's produce of the stored item (consume,
// store, publish), that to its arrival at a follower of the topic, and
// that to its arrival at each subscriber (hub, stream write, client).
type hops struct {
	stored, topic, delivered load.Latencies
}

// hops splits phase's latencies of s, eventIDs[a] being account a's event
// of the round and published[a] when it was produced.
func (t *activityTap) hops(s *subscribers, phase int, eventIDs []string, published []int64) hops {
	t.mu.Lock()
	defer t.mu.Unlock()
	var h hops
	for a, id := range eventIDs {
		p, ok := t.produced[id]
		if !ok {
			continue
		}
		h.stored.Add(p.Sub(time.Unix(0, published[a])))
		h.topic.Add(t.seen[id].Sub(p))
	}
	for i := range s.arrived[phase] {
		at := s.arrived[phase][i].Load()
		seen, ok := t.seen[eventIDs[i%s.accounts]]
		if at != 0 && ok {
			h.delivered.Add(time.Unix(0, at).Sub(seen))
		}
	}
	return h
}

// writeCommands are the store commands that write, whose count and time
// the fan-out reports.
var writeCommands = []string{"insert", "update"}

// commandTimes are the count and summed seconds of each write command a
// service sent, as its command monitor has them.
type commandTimes map[string][2]float64

func (e *env) commandTimes(ctx context.Context, service string) commandTimes {
	out := commandTimes{}
	for _, c := range writeCommands {
		labels := fmt.Sprintf(`{command=%q,outcome="ok"}`, c)
		n, _ := e.metric(ctx, service, "rcm_mongodb_command_duration_seconds_count"+labels)
		sum, _ := e.metric(ctx, service, "rcm_mongodb_command_duration_seconds_sum"+labels)
		out[c] = [2]float64{n, sum}
	}
	return out
}

func (c commandTimes) since(before commandTimes) commandTimes {
	out := commandTimes{}
	for k, v := range c {
		out[k] = [2]float64{v[0] - before[k][0], v[1] - before[k][1]}
	}
	return out
}

func (c commandTimes) String() string {
	var parts []string
	for _, k := range writeCommands {
		v := c[k]
		parts = append(parts, fmt.Sprintf("%s %.0f × %s", k, v[0], fmtDur(time.Duration(v[1]/max(1, v[0])*float64(time.Second)))))
	}
	return strings.Join(parts, ", ")
}
