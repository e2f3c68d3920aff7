package bench

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/load"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fanOut connects many SSE subscribers straight to one feed instance,
// publishes one event per account at a steady rate, then one more at a
// burst rate, and measures publish → received for every subscriber, and
// the feed's memory per subscriber.
func fanOut(ctx context.Context, e *env) (*Section, error) {
	cfg := e.cfg
	subs := cfg.Subscribers
	accounts := names("user_f", cfg.SubscriberAccounts)
	feed := e.stk.Process(stack.Feed)
	pid := feed.Pid()
	if pid == 0 {
		return nil, fmt.Errorf("the feed is not running")
	}
	// Each subscriber is a socket here and one in the feed.
	need := int64(subs + 512)
	feedLimit, err := openFilesLimit(pid)
	if err != nil {
		return nil, err
	}
	var own syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &own); err != nil {
		return nil, err
	}
	if feedLimit < need || int64(own.Cur) < need {
		return nil, fmt.Errorf("%d subscribers need %d open files; the limit is %d here and %d in the feed (raise ulimit -n, or use -subscribers)",
			subs, need, own.Cur, feedLimit)
	}
	if err := e.settle(ctx); err != nil {
		return nil, err
	}
	rssBefore, err := rssKiB(pid)
	if err != nil {
		return nil, err
	}

	streamCtx, closeStreams := context.WithCancel(ctx)
	defer closeStreams()
	client := newStreamClient()
	defer client.CloseIdleConnections()
	// Each account gets one event per phase: a subscriber's n-th item is
	// phase n's. arrived[phase][subscriber] is in unix nanos, 0 until then.
	rates := []float64{cfg.FanOutRate, cfg.FanOutBurst}
	arrived := make([][]atomic.Int64, len(rates))
	for i := range arrived {
		arrived[i] = make([]atomic.Int64, subs)
	}
	seen := make([]atomic.Int32, subs)
	received := make([]atomic.Int64, len(rates))
	var readers sync.WaitGroup
	defer readers.Wait()
	defer closeStreams()

	e.logf("fan-out: connecting %s subscribers over %s accounts straight to the feed", fmtInt(subs), fmtInt(len(accounts)))
	connectStart := time.Now()
	res, err := load.Run(ctx, load.Config{Workers: 64, Count: subs}, func(_ context.Context, _, i int) error {
		a := accounts[i%len(accounts)]
		req, err := e.serviceRequest(streamCtx, stack.Feed, http.MethodGet, "/v1/activity/stream", a, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "text/event-stream")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("stream of %s: %s", a, resp.Status)
		}
		readers.Go(func() {
			defer resp.Body.Close()
			_ = readSSE(resp.Body, func([]byte) {
				at := time.Now().UnixNano()
				if n := int(seen[i].Add(1)) - 1; n < len(rates) {
					arrived[n][i].Store(at)
					received[n].Add(1)
				}
			})
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if res.Errors > 0 {
		return nil, fmt.Errorf("%d of %d subscribers could not connect; the first: %v", res.Errors, subs, res.FirstErr)
	}
	connectTook := time.Since(connectStart)
	if err := e.waitMetric(ctx, stack.Feed, "rcm_feed_subscribers", float64(subs)); err != nil {
		return nil, err
	}
	e.logf("  connected in %s", fmtDur(connectTook))
	time.Sleep(time.Second) // let the connections' buffers settle before reading the memory
	rssConnected, err := rssKiB(pid)
	if err != nil {
		return nil, err
	}
	e.heapProfile(ctx, stack.Feed, "fanout-connected")

	// One event per account and phase; subscriber i follows account
	// i mod accounts.
	lat := make([]load.Latencies, len(rates))
	for phase, rate := range rates {
		byAccount := e.accountEvents(accounts, len(accounts))
		published := make([]atomic.Int64, len(accounts))
		e.logf("  publishing %d events at %s", len(accounts), fmtRate(rate))
		wait := e.profile(ctx, fmt.Sprintf("fanout-%d", phase+1), time.Duration(float64(len(accounts))/rate*float64(time.Second))+2*time.Second)
		var produceErr atomic.Value
		err = load.Pace(ctx, rate, len(accounts), func(ctx context.Context, i int) {
			recs, err := records(byAccount[i]...)
			if err != nil {
				produceErr.CompareAndSwap(nil, err)
				return
			}
			published[i].Store(time.Now().UnixNano())
			e.kafka.Produce(ctx, recs[0], func(_ *kgo.Record, err error) {
				if err != nil {
					produceErr.CompareAndSwap(nil, err)
				}
			})
		})
		if err != nil {
			return nil, err
		}
		if v := produceErr.Load(); v != nil {
			return nil, fmt.Errorf("produce: %v", v)
		}
		deadline := time.Now().Add(60 * time.Second)
		for received[phase].Load() < int64(subs) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		wait()
		for i := range arrived[phase] {
			if at := arrived[phase][i].Load(); at != 0 {
				lat[phase].Add(time.Duration(at - published[i%len(accounts)].Load()))
			}
		}
		e.logf("  %s of %s delivered, p99 %s", fmtInt(lat[phase].Len()), fmtInt(subs), fmtDur(lat[phase].Percentile(99)))
	}
	rssDelivered, err := rssKiB(pid)
	if err != nil {
		return nil, err
	}
	dropped, err := e.metric(ctx, stack.Feed, "rcm_feed_dropped_subscribers_total")
	if err != nil {
		return nil, err
	}

	closeStreams()
	readers.Wait()
	if err := e.waitMetric(ctx, stack.Feed, "rcm_feed_subscribers", 0); err != nil {
		return nil, err
	}
	if err := e.settle(ctx); err != nil {
		return nil, err
	}

	perSub := float64(rssConnected-rssBefore) / float64(subs)
	sec := &Section{
		Title:  fmt.Sprintf("SSE fan-out: %s subscribers on one feed instance", fmtInt(subs)),
		Header: []string{"figure", "value"},
	}
	sec.row("subscribers connected (straight to the feed)", fmt.Sprintf("%s over %s accounts", fmtInt(subs), fmtInt(len(accounts))))
	sec.row("time to connect them all (64 at a time)", fmt.Sprintf("%s (%s)", fmtDur(connectTook), fmtRate(float64(subs)/connectTook.Seconds())))
	for phase, rate := range rates {
		l := &lat[phase]
		sec.row(fmt.Sprintf("events published at %s: deliveries received", fmtRate(rate)), fmt.Sprintf("%s of %s", fmtInt(l.Len()), fmtInt(subs)))
		sec.row(fmt.Sprintf("events published at %s: publish → received, p50 / p99 / max", fmtRate(rate)),
			fmt.Sprintf("%s / %s / %s", fmtDur(l.Percentile(50)), fmtDur(l.Percentile(99)), fmtDur(l.Max())))
	}
	sec.row("subscribers dropped as too slow", fmtInt(int(dropped)))
	sec.row("feed RSS: before → connected → after delivery", fmt.Sprintf("%s → %s → %s MiB",
		fmtMiB(rssBefore), fmtMiB(rssConnected), fmtMiB(rssDelivered)))
	sec.row("feed memory per subscriber (RSS growth / subscribers)", fmt.Sprintf("%.1f KiB", perSub))
	sec.note("Subscribers connect straight to the feed service with principals signed as the gateway signs them: through " +
		"the gateway every stream would be two sockets and two relays on this one machine, and the gateway's cap of " +
		"streams per account would apply. The open-files limit was raised for this process, and the feed, its child, " +
		"inherits it (checked in /proc/<pid>/limits).")
	sec.note("Then one campaign_started event per account was produced to the event topic at a steady %s, and then one "+
		"more per account at %s; each subscriber records when its account's item arrives. The latency runs from the "+
		"produce call to the arrival: the feed's consumer storing the item (in the first round each account's first, "+
		"whose head it looks up in the store; in the second the head is cached), its publication on the activity topic, the hub and the stream write. "+
		"Compliance appends the same events meanwhile, on the same store.", fmtRate(cfg.FanOutRate), fmtRate(cfg.FanOutBurst))
	sec.note("Memory: the feed's VmRSS from /proc before connecting and 1 s after the last subscriber connected.")
	return sec, nil
}

func fmtMiB(kib int64) string { return fmt.Sprintf("%.0f", float64(kib)/1024) }

// waitMetric waits until a service's metric equals want.
func (e *env) waitMetric(ctx context.Context, service, name string, want float64) error {
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := e.metric(ctx, service, name)
		if err != nil {
			return err
		}
		if v == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s is %v, want %v", service, name, v, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
