package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/load"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// commitPoll is how often the compliance group's committed offsets are
// read during the pipeline measurement: the resolution of "durable".
const commitPoll = 5 * time.Millisecond

// pipeline measures, at a steady start-campaign rate through the gateway,
// the time from each 201 until the compliance entry is durable and until
// the SSE item reaches a subscriber through the gateway.
func pipeline(ctx context.Context, e *env) (*Section, error) {
	cfg := e.cfg
	accounts := names("user_p", cfg.PipelineAccounts)
	ops, err := e.newStartOps(ctx, accounts)
	if err != nil {
		return nil, err
	}
	if err := e.settle(ctx); err != nil {
		return nil, err
	}

	// One SSE stream per account through the gateway, as a browser holds.
	streamCtx, closeStreams := context.WithCancel(ctx)
	defer closeStreams()
	streams := newStreamClient()
	defer streams.CloseIdleConnections()
	var delivered sync.Map // campaign id -> time.Time the item arrived
	var readers sync.WaitGroup
	defer readers.Wait()
	defer closeStreams()
	for _, a := range accounts {
		req, err := e.gatewayRequest(streamCtx, http.MethodGet, "/v1/activity/stream", ops.tokens[a], nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "text/event-stream")
		resp, err := streams.Do(req)
		if err != nil {
			return nil, fmt.Errorf("open the stream of %s: %w", a, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("open the stream of %s: %s", a, resp.Status)
		}
		readers.Go(func() {
			defer resp.Body.Close()
			_ = readSSE(resp.Body, func(data []byte) {
				at := time.Now()
				var it struct {
					Type       string `json:"type"`
					CampaignID string `json:"campaignId"`
				}
				if json.Unmarshal(data, &it) == nil && it.Type == events.TypeCampaignStarted {
					delivered.LoadOrStore(it.CampaignID, at)
				}
			})
		})
	}

	// Where each event lands on the topic, and when the compliance group's
	// commits pass it: compliance commits only after the entries are
	// durably written.
	watch, err := e.watchTopic(ctx)
	if err != nil {
		return nil, err
	}
	defer watch.close()

	n := int(cfg.PipelineRate * cfg.PipelineDuration.Seconds())
	type sample struct {
		sent, accepted time.Time
		campaign       string
	}
	samples := make([]sample, n)
	var failed atomic.Int64
	var firstErr atomic.Value
	e.logf("pipeline: %s start-campaign for %s through the gateway, %d SSE streams", fmtRate(cfg.PipelineRate), cfg.PipelineDuration, len(accounts))
	err = load.Pace(ctx, cfg.PipelineRate, n, func(_ context.Context, i int) {
		a := accounts[i%len(accounts)]
		sent := time.Now()
		req, err := e.gatewayRequest(ctx, http.MethodPost, startPath(docOf(a)), ops.tokens[a], startBody)
		var body []byte
		if err == nil {
			body, err = e.do(e.http, req, http.StatusCreated)
		}
		accepted := time.Now()
		var id string
		if err == nil {
			id, err = campaignID(body)
		}
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err)
			return
		}
		samples[i] = sample{sent: sent, accepted: accepted, campaign: id}
	})
	if err != nil {
		return nil, err
	}
	ok := n - int(failed.Load())
	e.started += ok
	if err := e.settle(ctx); err != nil {
		return nil, err
	}
	// The last items may still be on their way to the streams, and the
	// last records to the watch.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		missing := 0
		for _, s := range samples {
			if s.campaign == "" {
				continue
			}
			_, got := delivered.Load(s.campaign)
			_, done := watch.durableAt(s.campaign)
			if !got || !done {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	watch.close()
	closeStreams()

	var api, durable, sse load.Latencies
	var early, notDurable, notDelivered int
	for _, s := range samples {
		if s.campaign == "" {
			continue
		}
		api.Add(s.accepted.Sub(s.sent))
		if at, ok := watch.durableAt(s.campaign); ok {
			durable.Add(max(0, at.Sub(s.accepted)))
		} else {
			notDurable++
		}
		if v, ok := delivered.Load(s.campaign); ok {
			d := v.(time.Time).Sub(s.accepted)
			if d < 0 {
				early++
			}
			sse.Add(max(0, d))
		} else {
			notDelivered++
		}
	}

	sec := &Section{
		Title:  "Pipeline latency at a steady rate",
		Header: []string{"interval", "samples", "p50", "p99", "max"},
	}
	add := func(name string, l *load.Latencies) {
		sec.row(name, fmtInt(l.Len()), fmtDur(l.Percentile(50)), fmtDur(l.Percentile(99)), fmtDur(l.Max()))
	}
	add("request sent → 201 (gateway)", &api)
	add("201 → compliance entry durable", &durable)
	add("201 → SSE item delivered (through the gateway)", &sse)
	sec.note("Start-campaign through the gateway at a steady %s for %s (open loop: requests start on schedule whatever "+
		"the answers take), over %d accounts, each with one SSE stream open through the gateway; %d of %d requests answered 201.",
		fmtRate(cfg.PipelineRate), cfg.PipelineDuration, len(accounts), ok, n)
	sec.note("Durable: the compliance consumer commits a record's offset only after its entry is written, so an entry "+
		"counts as durable when the group's committed offset (read every %s from the broker, which costs the store "+
		"nothing) passes the event's record; the figure includes that commit and up to %s of polling.", commitPoll, commitPoll)
	if early > 0 {
		sec.note("%d items reached their stream before the client had read the 201 (counted as 0).", early)
	}
	if notDurable+notDelivered > 0 {
		sec.note("Not observed within the wait: %d durable entries, %d deliveries.", notDurable, notDelivered)
	}
	if v := firstErr.Load(); v != nil {
		sec.note("%d requests failed; the first: %v.", failed.Load(), v)
	}
	return sec, nil
}

// topicWatch follows the event topic from its current end, remembering
// where each campaign's first event landed, and polls the compliance
// group's committed offsets, remembering when each commit was first seen.
type topicWatch struct {
	cancel context.CancelFunc
	once   sync.Once
	done   sync.WaitGroup
	cl     *kgo.Client

	mu        sync.Mutex
	positions map[string]position  // campaign id -> first record
	commits   map[int32][]commitAt // partition -> commits in the order seen
}

type position struct {
	partition int32
	offset    int64
}

type commitAt struct {
	offset int64 // the next offset to consume: every record below it is committed
	at     time.Time
}

func (e *env) watchTopic(ctx context.Context) (*topicWatch, error) {
	adm := kadm.NewClient(e.kafka)
	ends, err := adm.ListEndOffsets(ctx, events.Topic)
	if err != nil {
		return nil, err
	}
	from := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { from[o.Partition] = kgo.NewOffset().At(o.Offset) })
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{e.stk.KafkaAddr()}}, "rcmbench-watch", prometheus.NewRegistry(), e.logger,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{events.Topic: from}), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &topicWatch{cancel: cancel, cl: cl, positions: map[string]position{}, commits: map[int32][]commitAt{}}
	w.done.Go(func() {
		for {
			fetches := cl.PollFetches(ctx)
			if ctx.Err() != nil || fetches.IsClientClosed() {
				return
			}
			fetches.EachRecord(func(r *kgo.Record) {
				var ev struct {
					CampaignID string `json:"campaignId"`
				}
				if json.Unmarshal(r.Value, &ev) != nil {
					return
				}
				w.mu.Lock()
				if _, seen := w.positions[ev.CampaignID]; !seen {
					w.positions[ev.CampaignID] = position{r.Partition, r.Offset}
				}
				w.mu.Unlock()
			})
		}
	})
	w.done.Go(func() {
		t := time.NewTicker(commitPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			committed, err := adm.FetchOffsets(ctx, groupCompliance)
			if err != nil {
				continue
			}
			now := time.Now()
			w.mu.Lock()
			committed.Each(func(o kadm.OffsetResponse) {
				if o.Topic != events.Topic || o.Err != nil {
					return
				}
				list := w.commits[o.Partition]
				if len(list) == 0 || list[len(list)-1].offset < o.At {
					w.commits[o.Partition] = append(list, commitAt{o.At, now})
				}
			})
			w.mu.Unlock()
		}
	})
	return w, nil
}

// durableAt is when the compliance group's commit was first seen past the
// campaign's event.
func (w *topicWatch) durableAt(campaign string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.positions[campaign]
	if !ok {
		return time.Time{}, false
	}
	list := w.commits[p.partition]
	i := sort.Search(len(list), func(i int) bool { return list[i].offset > p.offset })
	if i == len(list) {
		return time.Time{}, false
	}
	return list[i].at, true
}

func (w *topicWatch) close() {
	w.once.Do(func() {
		w.cancel()
		w.done.Wait()
		w.cl.Close()
	})
}
