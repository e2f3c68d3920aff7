package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/load"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// replicaSubscribersPerAccount is how many subscribers of each account
// the second feed instance gets: enough to show that every account's
// items reach streams on an instance that stores only some of them.
const replicaSubscribersPerAccount = 1

// storeCommands is the metric the services' MongoDB command monitor keeps:
// its count summed over commands and outcomes is every command sent.
const storeCommands = "rcm_mongodb_command_duration_seconds_count"

// storeCommandSeconds is the time those commands took, summed.
const storeCommandSeconds = "rcm_mongodb_command_duration_seconds_sum"

// fanOut connects many SSE subscribers straight to one feed instance, and
// one per account to a second instance of the same consumer group,
// publishes one event per account at a steady rate, then one more at a
// burst rate, and measures publish → received for every subscriber, the
// store commands the feed sends per stream and per event, and the feed's
// memory per subscriber.
func fanOut(ctx context.Context, e *env) (*Section, error) {
	cfg := e.cfg
	subs := cfg.Subscribers
	accounts := names("user_f", cfg.SubscriberAccounts)
	// Restarted, the feed holds none of what the scenarios before this
	// one left in its heap (a catch-up of thousands of events), which it
	// would hand back to the system while the subscribers connect and
	// make the memory they take look smaller.
	e.logf("fan-out: restarting the feed, so that its memory before the subscribers is its own at rest")
	feed := e.stk.Process(stack.Feed)
	if err := feed.Stop(); err != nil {
		return nil, fmt.Errorf("stop the feed: %w", err)
	}
	if err := feed.Start(ctx); err != nil {
		return nil, fmt.Errorf("start the feed: %w", err)
	}
	if err := e.waitLag(ctx, groupFeed); err != nil {
		return nil, err
	}
	pid := feed.Pid()
	if pid == 0 {
		return nil, fmt.Errorf("the feed is not running")
	}
	// Each subscriber is a socket here and one in the feed.
	need := int64(subs + len(accounts) + 512)
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
	e.logf("fan-out: starting a second feed instance in the same consumer group")
	replica, err := e.startFeedReplica(ctx)
	if err != nil {
		return nil, err
	}
	defer replica.stop()
	e.waitGroupMembers(ctx, groupFeed, 2)
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
	rates := []float64{cfg.FanOutRate, cfg.FanOutBurst}
	main := newSubscribers(subs, len(rates))
	side := newSubscribers(len(accounts)*replicaSubscribersPerAccount, len(rates))
	defer main.wait()
	defer side.wait()
	defer closeStreams()

	e.logf("fan-out: connecting %s subscribers over %s accounts straight to the feed", fmtInt(subs), fmtInt(len(accounts)))
	commandsBefore, err := e.metric(ctx, stack.Feed, storeCommands)
	if err != nil {
		return nil, err
	}
	connectStart := time.Now()
	wait := e.profile(ctx, "fanout-connect", 5*time.Second)
	if err := main.connect(ctx, streamCtx, e, client, e.stk.URL(stack.Feed), accounts); err != nil {
		return nil, err
	}
	connectTook := time.Since(connectStart)
	if err := e.waitMetric(ctx, stack.Feed, "rcm_feed_subscribers", float64(subs)); err != nil {
		return nil, err
	}
	wait()
	commandsConnected, err := e.metric(ctx, stack.Feed, storeCommands)
	if err != nil {
		return nil, err
	}
	e.logf("  connected in %s", fmtDur(connectTook))
	time.Sleep(time.Second) // let the connections' buffers settle before reading the memory
	rssConnected, err := rssKiB(pid)
	if err != nil {
		return nil, err
	}
	e.heapProfile(ctx, stack.Feed, "fanout-connected")
	e.logf("  connecting %s subscribers to the second instance", fmtInt(side.n))
	if err := side.connect(ctx, streamCtx, e, client, replica.url, accounts); err != nil {
		return nil, err
	}

	tap, err := e.tapActivity(streamCtx)
	if err != nil {
		return nil, err
	}
	defer tap.close()

	// One event per account and phase; subscriber i follows account
	// i mod accounts.
	lat := make([]load.Latencies, len(rates))
	hop := make([]hops, len(rates))
	commandTime := make([]float64, len(rates))
	byCommand := make([]commandTimes, len(rates))
	complianceCommands := make([]commandTimes, len(rates))
	sideLat := make([]load.Latencies, len(rates))
	commands := make([]float64, len(rates))
	stored := make([]float64, len(rates))
	for phase, rate := range rates {
		byAccount := e.accountEvents(accounts, len(accounts))
		published := make([]atomic.Int64, len(accounts))
		eventIDs := make([]string, len(accounts))
		for a, evs := range byAccount {
			eventIDs[a] = evs[0].EventID
		}
		e.logf("  publishing %d events at %s", len(accounts), fmtRate(rate))
		before, err := e.metric(ctx, stack.Feed, storeCommands)
		if err != nil {
			return nil, err
		}
		storedBefore, err := e.metric(ctx, stack.Feed, "rcm_feed_items_stored_total")
		if err != nil {
			return nil, err
		}
		timeBefore, err := e.metric(ctx, stack.Feed, storeCommandSeconds)
		if err != nil {
			return nil, err
		}
		byBefore := e.commandTimes(ctx, stack.Feed)
		complianceBefore := e.commandTimes(ctx, stack.Compliance)
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
		for (main.received[phase].Load() < int64(main.n) || side.received[phase].Load() < int64(side.n)) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		wait()
		if err := e.settle(ctx); err != nil {
			return nil, err
		}
		after, err := e.metric(ctx, stack.Feed, storeCommands)
		if err != nil {
			return nil, err
		}
		storedAfter, err := e.metric(ctx, stack.Feed, "rcm_feed_items_stored_total")
		if err != nil {
			return nil, err
		}
		timeAfter, err := e.metric(ctx, stack.Feed, storeCommandSeconds)
		if err != nil {
			return nil, err
		}
		byCommand[phase] = e.commandTimes(ctx, stack.Feed).since(byBefore)
		complianceCommands[phase] = e.commandTimes(ctx, stack.Compliance).since(complianceBefore)
		commands[phase] = (after - before) / max(1, storedAfter-storedBefore)
		commandTime[phase] = (timeAfter - timeBefore) / max(1, after-before)
		at := make([]int64, len(published))
		for a := range published {
			at[a] = published[a].Load()
		}
		hop[phase] = tap.hops(main, phase, eventIDs, at)
		stored[phase] = storedAfter - storedBefore
		lat[phase] = main.latencies(phase, published)
		sideLat[phase] = side.latencies(phase, published)
		e.logf("  %s of %s delivered, p99 %s; second instance %s of %s, p99 %s", fmtInt(lat[phase].Len()), fmtInt(main.n),
			fmtDur(lat[phase].Percentile(99)), fmtInt(sideLat[phase].Len()), fmtInt(side.n), fmtDur(sideLat[phase].Percentile(99)))
	}
	rssDelivered, err := rssKiB(pid)
	if err != nil {
		return nil, err
	}
	e.heapProfile(ctx, stack.Feed, "fanout-delivered")
	dropped, err := e.metric(ctx, stack.Feed, "rcm_feed_dropped_subscribers_total")
	if err != nil {
		return nil, err
	}

	closeStreams()
	main.wait()
	side.wait()
	if err := e.waitMetric(ctx, stack.Feed, "rcm_feed_subscribers", 0); err != nil {
		return nil, err
	}
	if err := e.settle(ctx); err != nil {
		return nil, err
	}

	perSub := float64(rssConnected-rssBefore) / float64(subs)
	perSubDelivered := float64(rssDelivered-rssBefore) / float64(subs)
	sec := &Section{
		Title:  fmt.Sprintf("SSE fan-out: %s subscribers on one feed instance", fmtInt(subs)),
		Header: []string{"figure", "value"},
	}
	sec.row("subscribers connected (straight to the feed)", fmt.Sprintf("%s over %s accounts", fmtInt(subs), fmtInt(len(accounts))))
	sec.row("time to connect them all (64 at a time)", fmt.Sprintf("%s (%s)", fmtDur(connectTook), fmtRate(float64(subs)/connectTook.Seconds())))
	sec.row("feed store commands per stream opened (command monitor)", fmt.Sprintf("%.2f", (commandsConnected-commandsBefore)/float64(subs)))
	for phase, rate := range rates {
		l, s := &lat[phase], &sideLat[phase]
		sec.row(fmt.Sprintf("events published at %s: deliveries received", fmtRate(rate)), fmt.Sprintf("%s of %s", fmtInt(l.Len()), fmtInt(main.n)))
		sec.row(fmt.Sprintf("events published at %s: publish → received, p50 / p99 / max", fmtRate(rate)),
			fmt.Sprintf("%s / %s / %s", fmtDur(l.Percentile(50)), fmtDur(l.Percentile(99)), fmtDur(l.Max())))
		sec.row(fmt.Sprintf("events published at %s: second instance, received / p50 / p99", fmtRate(rate)),
			fmt.Sprintf("%s of %s / %s / %s", fmtInt(s.Len()), fmtInt(side.n), fmtDur(s.Percentile(50)), fmtDur(s.Percentile(99))))
		sec.row(fmt.Sprintf("events published at %s: first instance's store commands per item it stored", fmtRate(rate)),
			fmt.Sprintf("%.2f (%s items), %s each", commands[phase], fmtInt(int(stored[phase])), fmtDur(time.Duration(commandTime[phase]*float64(time.Second)))))
		sec.row(fmt.Sprintf("events published at %s: first instance's writes, count × mean", fmtRate(rate)), byCommand[phase].String())
		sec.row(fmt.Sprintf("events published at %s: compliance's writes meanwhile, count × mean", fmtRate(rate)), complianceCommands[phase].String())
		h := &hop[phase]
		sec.row(fmt.Sprintf("events published at %s: hops p50 / p99: event → item published, → at a follower, → received", fmtRate(rate)),
			fmt.Sprintf("%s / %s, %s / %s, %s / %s", fmtDur(h.stored.Percentile(50)), fmtDur(h.stored.Percentile(99)),
				fmtDur(h.topic.Percentile(50)), fmtDur(h.topic.Percentile(99)), fmtDur(h.delivered.Percentile(50)), fmtDur(h.delivered.Percentile(99))))
	}
	sec.row("subscribers dropped as too slow", fmtInt(int(dropped)))
	sec.row("feed RSS: before → connected → after delivery", fmt.Sprintf("%s → %s → %s MiB",
		fmtMiB(rssBefore), fmtMiB(rssConnected), fmtMiB(rssDelivered)))
	sec.row("feed memory per subscriber (RSS growth / subscribers), connected / after delivery", fmt.Sprintf("%.1f KiB / %.1f KiB", perSub, perSubDelivered))
	lim, limErr := readFeedLimits(feedManifest)
	if limErr != nil {
		sec.row("feed memory against the deploy's limits", fmt.Sprintf("not read: %v", limErr))
	} else {
		share := func(kib int64) string {
			return fmt.Sprintf("%s MiB (%.0f%%)", fmtMiB(kib), 100*float64(kib<<10)/float64(lim.soft))
		}
		atCap := rssBefore + int64(perSubDelivered*float64(lim.streams))
		sec.row(fmt.Sprintf("feed memory ÷ the deploy's GOMEMLIMIT (%s MiB): %s streams after delivery / the cap of %s",
			fmtMiB(lim.soft>>10), fmtInt(subs), fmtInt(int(lim.streams))), share(rssDelivered)+" / "+share(atCap))
	}
	sec.note("Subscribers connect straight to the feed service with principals signed as the gateway signs them: through " +
		"the gateway every stream would be two sockets and two relays on this one machine, and the gateway's cap of " +
		"streams per account would apply. The open-files limit was raised for this process, and the feed, its child, " +
		"inherits it (checked in /proc/<pid>/limits).")
	sec.note("A second feed instance runs beside the stack's, in the same consumer group: each stores the events of its share "+
		"of the partitions, and both follow the whole activity topic. %s subscribers (one per account) connect to it, after "+
		"the %s on the first, and its rows say whether every account's items reached them whichever instance stored them.",
		fmtInt(side.n), fmtInt(subs))
	sec.note("Then one campaign_started event per account was produced to the event topic at a steady %s, and then one "+
		"more per account at %s; each subscriber records when its account's item arrives. The latency runs from the "+
		"produce call to the arrival: a feed consumer storing the item (in the first round each account's first, "+
		"whose head it looks up in the store; in the second the head is cached), its publication on the activity topic, the hub and the stream write. "+
		"Compliance appends the same events meanwhile, on the same store. Store commands are counted by the first instance's "+
		"MongoDB command monitor (rcm_mongodb_command_duration_seconds), so a change that adds a round trip shows however noisy the timings.",
		fmtRate(cfg.FanOutRate), fmtRate(cfg.FanOutBurst))
	sec.note("Hops: a follower of the activity topic in this process, like each feed's hub, records for every item the " +
		"timestamp its feed's producer gave it (once the item is stored) and when it arrived here. " +
		"So publish → received splits into the event's produce → the item's publication (fetch, store, produce), → its " +
		"arrival at a follower of the topic, → its arrival at each subscriber (hub, stream write, client). The writes " +
		"row is the first instance's inserts (items) and updates (heads' hints, written once per 8 items of an account) with their mean duration; " +
		"compliance's, on the same store, are its inserts (entries, tree records, checkpoints, cosignatures) and updates (each account's " +
		"head and tree size hint, one statement, and its checkpoints' publication marks, up to 16 accounts a command; on this store each " +
		"statement of an update is a transaction of its own).")
	sec.note("Memory: the first instance's VmRSS from /proc before connecting (the feed restarted at the start of this scenario, " +
		"so that it holds nothing an earlier one left), 1 s after the last subscriber connected, and after both rounds.")
	if limErr == nil {
		sec.note("The deploy (%s) gives a feed instance a memory limit of %s MiB, a GOMEMLIMIT of %s MiB and at most %s "+
			"streams (RCM_FEED_MAX_STREAMS); the memory at that cap is this run's RSS before connecting plus %s times its "+
			"memory per subscriber after delivery.", feedManifest, fmtMiB(lim.limit>>10), fmtMiB(lim.soft>>10),
			fmtInt(int(lim.streams)), fmtInt(int(lim.streams)))
	}
	return sec, nil
}

func fmtMiB(kib int64) string { return fmt.Sprintf("%.0f", float64(kib)/1024) }

// subscribers is a set of SSE streams, each recording when its n-th item
// arrived: arrived[phase][subscriber] in unix nanos, 0 until then.
type subscribers struct {
	n        int
	arrived  [][]atomic.Int64
	seen     []atomic.Int32
	received []atomic.Int64
	readers  sync.WaitGroup
	accounts int
}

func newSubscribers(n, phases int) *subscribers {
	s := &subscribers{n: n, seen: make([]atomic.Int32, n), received: make([]atomic.Int64, phases), arrived: make([][]atomic.Int64, phases)}
	for i := range s.arrived {
		s.arrived[i] = make([]atomic.Int64, n)
	}
	return s
}

// connect opens the streams to the feed at base, 64 at a time, subscriber
// i following account i mod accounts; they read until streamCtx ends.
func (s *subscribers) connect(ctx, streamCtx context.Context, e *env, client *http.Client, base string, accounts []string) error {
	s.accounts = len(accounts)
	target, err := url.Parse(base)
	if err != nil {
		return err
	}
	res, err := load.Run(ctx, load.Config{Workers: 64, Count: s.n}, func(_ context.Context, _, i int) error {
		a := accounts[i%len(accounts)]
		req, err := e.serviceRequest(streamCtx, stack.Feed, http.MethodGet, "/v1/activity/stream", a, nil)
		if err != nil {
			return err
		}
		req.URL.Host, req.Host = target.Host, target.Host
		req.Header.Set("Accept", "text/event-stream")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("stream of %s: %s", a, resp.Status)
		}
		s.readers.Go(func() {
			defer resp.Body.Close()
			_ = readSSE(resp.Body, func([]byte) {
				at := time.Now().UnixNano()
				if n := int(s.seen[i].Add(1)) - 1; n < len(s.arrived) {
					s.arrived[n][i].Store(at)
					s.received[n].Add(1)
				}
			})
		})
		return nil
	})
	if err != nil {
		return err
	}
	if res.Errors > 0 {
		return fmt.Errorf("%d of %d subscribers could not connect; the first: %v", res.Errors, s.n, res.FirstErr)
	}
	return nil
}

func (s *subscribers) wait() { s.readers.Wait() }

// latencies are the phase's publish → arrival times, published[a] being
// when account a's event was produced.
func (s *subscribers) latencies(phase int, published []atomic.Int64) load.Latencies {
	var l load.Latencies
	for i := range s.arrived[phase] {
		if at := s.arrived[phase][i].Load(); at != 0 {
			l.Add(time.Duration(at - published[i%s.accounts].Load()))
		}
	}
	return l
}

// feedReplica is a second feed process started from the same binary and
// configuration as the stack's, on a port of its own, with a consumer
// group instance id of its own.
type feedReplica struct {
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (e *env) startFeedReplica(ctx context.Context) (*feedReplica, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(e.stk.DataDir(), "logs", "feed-2.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(e.cfg.BinDir, stack.Feed))
	cmd.Env = append(os.Environ(),
		"RCM_HTTP_ADDR="+addr,
		"RCM_KAFKA_BROKERS="+e.stk.KafkaAddr(),
		"RCM_MONGODB_URI="+e.stk.MongoURI(),
		"RCM_CLERK_JWKS_URL="+e.stk.JWKS().JWKSURL(),
		"RCM_CLERK_ISSUER="+e.stk.JWKS().Issuer(),
		"RCM_INTERNAL_SECRET="+principal.DevSecret,
		"RCM_KAFKA_INSTANCE_ID=feed-2",
		"RCM_FEED_MAX_STREAMS=1000000",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start a second feed: %w", err)
	}
	r := &feedReplica{url: "http://" + addr, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/readyz", nil)
		if resp, err := e.http.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("the second feed exited before it was ready (see feed-2.log)")
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("the second feed was not ready in 60 s")
		}
	}
}

// waitGroupMembers waits until group is stable with n members that each
// hold partitions; a group it cannot describe, or one that does not get
// there in 30 s, is logged and the run goes on.
func (e *env) waitGroupMembers(ctx context.Context, group string, n int) {
	adm := kadm.NewClient(e.kafka)
	deadline := time.Now().Add(30 * time.Second)
	for {
		described, err := adm.DescribeGroups(ctx, group)
		if err == nil {
			if g, ok := described[group]; ok && g.Err == nil && g.State == "Stable" && len(g.Members) == n {
				assigned := 0
				for _, m := range g.Members {
					if a, ok := m.Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
						assigned++
					}
				}
				if assigned == n {
					return
				}
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			e.logf("  group %s not seen stable with %d members (%v): going on", group, n, err)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop ends the replica with SIGTERM, as an orchestrator would, and kills
// it if it has not exited in 20 s.
func (r *feedReplica) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

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
