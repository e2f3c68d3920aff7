package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/rcm-platform/rcm/dev/campaignseed"
	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/load"
	"github.com/rcm-platform/rcm/dev/logseed"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The accounts whose reads are timed as the store grows.
const (
	growthLogAccount    = "user_gprobe" // growthProbeEntries log entries
	growthListAccount   = "user_glist"  // growthListCampaigns campaigns on one document
	growthListCampaigns = 20
	timedRepeats        = 5
	// timedBudget stops repeating a slow read: the median of fewer samples.
	timedBudget = 5 * time.Second
	// idleWindow is how long the store's background CPU use is measured.
	idleWindow = 10 * time.Second
)

// readTimes are the timed reads of one store size (medians of up to
// timedRepeats) and the store's CPU use while idle.
type readTimes struct {
	lookup, lookup99   time.Duration // one entry by _id, straight from the store
	read, verify, list time.Duration
	// idleCPU is this process's CPU use (the embedded store and broker)
	// while no load runs, in cores.
	idleCPU float64
}

// growth measures start-campaign and the compliance log's read and verify
// on an empty store, then again with GrowthCampaigns campaigns and
// GrowthEntries log entries in it.
func growth(ctx context.Context, e *env) (*Section, error) {
	cfg := e.cfg
	ops, err := e.newStartOps(ctx, names("user_g", cfg.Accounts))
	if err != nil {
		return nil, err
	}
	// The log read and verified: growthProbeEntries entries of one
	// account, chained, written as the compliance service writes them.
	probe := e.accountEvents([]string{growthLogAccount}, growthProbeEntries)
	if err := e.seedEntries(ctx, probe); err != nil {
		return nil, err
	}
	// The campaigns listed: growthListCampaigns on one document.
	list, err := e.newStartOps(ctx, []string{growthListAccount})
	if err != nil {
		return nil, err
	}
	for i := range growthListCampaigns {
		if err := list.gateway(ctx, 0, i); err != nil {
			return nil, err
		}
	}
	list.counted()
	if err := e.quiesce(ctx); err != nil {
		return nil, err
	}

	e.logf("growth: the empty store")
	emptyReads, emptyStart, err := e.growthStep(ctx, ops, "growth-empty")
	if err != nil {
		return nil, err
	}

	e.logf("growth: seeding %s campaigns and %s log entries", fmtInt(cfg.GrowthCampaigns), fmtInt(cfg.GrowthEntries))
	t := time.Now()
	if err := e.seedCampaigns(ctx, cfg.GrowthCampaigns); err != nil {
		return nil, err
	}
	campaignsTook := time.Since(t)
	seeded := cfg.GrowthEntries - growthProbeEntries
	t = time.Now()
	if err := e.seedEntries(ctx, e.accountEvents(names("user_ge", max(1, seeded/growthProbeEntries)), seeded)); err != nil {
		return nil, err
	}
	entriesTook := time.Since(t)
	e.logf("  %s and %s", fmtDur(campaignsTook), fmtDur(entriesTook))
	// The seeded outboxes are empty: nothing to clear, no scan needed.
	if err := e.settle(ctx); err != nil {
		return nil, err
	}
	if err := e.checkSeeded(ctx, cfg.GrowthCampaigns); err != nil {
		return nil, err
	}

	e.logf("growth: the seeded store")
	fullReads, fullStart, err := e.growthStep(ctx, ops, "growth-full")
	if err != nil {
		return nil, err
	}

	full := fmt.Sprintf("%s campaigns, %s entries", fmtInt(cfg.GrowthCampaigns), fmtInt(cfg.GrowthEntries))
	sec := &Section{
		Title:  "Growth: an empty store against " + full,
		Header: []string{"figure", "empty store", full, "ratio"},
	}
	rateRow := func(name string, a, b float64) {
		sec.row(name, fmtRate(a), fmtRate(b), fmtRatio(ratio(b, a)))
	}
	durRow := func(name string, a, b time.Duration) {
		sec.row(name, fmtDur(a), fmtDur(b), fmtRatio(ratio(float64(b), float64(a))))
	}
	rateRow("start-campaign through the gateway, requests/s", emptyStart.Rate(), fullStart.Rate())
	durRow("start-campaign p50", emptyStart.Latencies.Percentile(50), fullStart.Latencies.Percentile(50))
	durRow("start-campaign p99", emptyStart.Latencies.Percentile(99), fullStart.Latencies.Percentile(99))
	durRow("store: find one log entry by _id, p50 of 100 (driver, no service)", emptyReads.lookup, fullReads.lookup)
	durRow("store: find one log entry by _id, p99 of 100", emptyReads.lookup99, fullReads.lookup99)
	durRow(fmt.Sprintf("read one account's whole log (%d entries, pages of 50)", growthProbeEntries), emptyReads.read, fullReads.read)
	durRow(fmt.Sprintf("verify one account's chain (%d entries)", growthProbeEntries), emptyReads.verify, fullReads.verify)
	sec.row(fmt.Sprintf("store CPU while no load runs (%s)", idleWindow), fmt.Sprintf("%.2f cores", emptyReads.idleCPU),
		fmt.Sprintf("%.2f cores", fullReads.idleCPU), fmtRatio(ratio(fullReads.idleCPU, emptyReads.idleCPU)))
	durRow(fmt.Sprintf("list one document's campaigns (%d)", growthListCampaigns), emptyReads.list, fullReads.list)

	sec.note("On each size, in this order: the list of one document's campaigns through the gateway; 100 lookups of log entries by _id with the driver; the log read "+
		"and the verify through the gateway (medians of up to %d); this process's CPU use over %s with no load running "+
		"(the embedded store and broker live in it: what remains is the services' periodic work in the store); then "+
		"start-campaign through the gateway, %d closed-loop workers for %s over %d accounts. \"Empty\" holds only the "+
		"accounts read here.", timedRepeats, idleWindow, cfg.Concurrency, cfg.GrowthDuration, cfg.Accounts)
	sec.note("Seeded straight into the services' collections with InsertMany, in the services' own document shapes: %s "+
		"campaigns (100 per account, on one document whose record holds their state, events already published; the layout the campaign service's store tests check) in %s (%s), and %s "+
		"hash-chained log entries (100 per "+
		"account, with their tree records and the head and tree size hints, dev/logseed) in %s (%s). The chain read and verified (%s) verified ok on both sizes.",
		fmtInt(cfg.GrowthCampaigns), fmtDur(campaignsTook), fmtRate(float64(cfg.GrowthCampaigns)/campaignsTook.Seconds()),
		fmtInt(seeded), fmtDur(entriesTook), fmtRate(float64(seeded)/entriesTook.Seconds()), growthLogAccount)
	sec.note("After each start-campaign run, once every event is published and recorded (consumer lag 0), the outbox " +
		"entries still waiting for the relay's clean-up are cleared in the store, so that the next step does not run " +
		"beside that backlog (see the start-campaign section for its size).")
	return sec, nil
}

// growthStep measures one store size: the campaign list, the log's
// lookups, read and verify, the store's CPU use while idle, then
// start-campaign.
func (e *env) growthStep(ctx context.Context, ops *startOps, phase string) (readTimes, load.Result, error) {
	var reads readTimes
	var err error
	if reads.list, err = e.timeList(ctx); err != nil {
		return reads, load.Result{}, err
	}
	if err := e.timeLogReads(ctx, &reads); err != nil {
		return reads, load.Result{}, err
	}
	if reads.idleCPU, err = ownCPU(ctx, idleWindow); err != nil {
		return reads, load.Result{}, err
	}
	e.logf("  list %s, log read %s, verify %s, idle store %.2f cores; start-campaign, %d workers for %s",
		fmtDur(reads.list), fmtDur(reads.read), fmtDur(reads.verify), reads.idleCPU, e.cfg.Concurrency, e.cfg.GrowthDuration)
	res, _, err := ops.measure(ctx, phase, e.cfg.GrowthDuration, ops.gateway)
	if err != nil {
		return reads, res, err
	}
	e.logf("  %s, p99 %s", fmtRate(res.Rate()), fmtDur(res.Latencies.Percentile(99)))
	return reads, res, e.quiesce(ctx)
}

// ownCPU is the CPU this process used over d, in cores: with no load
// running, the embedded store's and broker's background work, such as
// the scans the services' periodic queries cause.
func ownCPU(ctx context.Context, d time.Duration) (float64, error) {
	c0, err := selfCPU()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	c1, err := selfCPU()
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / float64(time.Since(t0)), nil
}

// quiesce waits for the pipeline, then clears what the relay has yet to
// remove from outboxes: every event in them is already published and
// recorded.
func (e *env) quiesce(ctx context.Context) error {
	if err := e.settle(ctx); err != nil {
		return err
	}
	res, err := e.mongo.Database(campaignseed.Database).Collection(campaignseed.DocumentsCollection).UpdateMany(ctx,
		bson.D{{Key: "outbox.0", Value: bson.D{{Key: "$exists", Value: true}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "outbox", Value: bson.A{}}}}})
	if err != nil {
		return fmt.Errorf("clear outboxes: %w", err)
	}
	if res.ModifiedCount > 0 {
		e.logf("  cleared %s published events from outboxes", fmtInt(int(res.ModifiedCount)))
	}
	return nil
}

// timed runs fn up to timedRepeats times (fewer once timedBudget is
// spent) and returns the median.
func timed(fn func() error) (time.Duration, error) {
	var l load.Latencies
	start := time.Now()
	for range timedRepeats {
		t := time.Now()
		if err := fn(); err != nil {
			return 0, err
		}
		l.Add(time.Since(t))
		if time.Since(start) > timedBudget {
			break
		}
	}
	return l.Percentile(50), nil
}

// getJSON decodes the 200 answer of a gateway read.
func (e *env) getJSON(ctx context.Context, path, tok string, v any) error {
	req, err := e.gatewayRequest(ctx, http.MethodGet, path, tok, nil)
	if err != nil {
		return err
	}
	body, err := e.do(e.http, req, http.StatusOK)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// timeLogReads times lookups of the probe account's entries straight
// from the store, and the read and verify of its log through the gateway.
func (e *env) timeLogReads(ctx context.Context, out *readTimes) error {
	tok, err := e.token(growthLogAccount)
	if err != nil {
		return err
	}
	entries := e.mongo.Database(complianceDB).Collection(auditlog.EntriesCollection)
	var lookups load.Latencies
	for seq := int64(1); seq <= growthProbeEntries; seq++ {
		t := time.Now()
		var d auditlog.Doc
		if err := entries.FindOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key(growthLogAccount, seq)}}).Decode(&d); err != nil {
			return fmt.Errorf("find entry %d of %s: %w", seq, growthLogAccount, err)
		}
		lookups.Add(time.Since(t))
	}
	out.lookup, out.lookup99 = lookups.Percentile(50), lookups.Percentile(99)
	out.read, err = timed(func() error {
		var seqs []int64
		path := "/v1/compliance-log?order=asc&limit=50"
		for {
			var page struct {
				Entries    []auditlog.Entry `json:"entries"`
				NextCursor string           `json:"nextCursor"`
			}
			if err := e.getJSON(ctx, path, tok, &page); err != nil {
				return err
			}
			for _, en := range page.Entries {
				seqs = append(seqs, en.Seq)
			}
			if page.NextCursor == "" {
				break
			}
			path = "/v1/compliance-log?order=asc&limit=50&cursor=" + page.NextCursor
		}
		if len(seqs) != growthProbeEntries || !slices.IsSorted(seqs) {
			return fmt.Errorf("read %d entries of %s, want %d in order", len(seqs), growthLogAccount, growthProbeEntries)
		}
		return nil
	})
	if err != nil {
		return err
	}
	out.verify, err = timed(func() error {
		var v struct {
			OK      bool `json:"ok"`
			Entries int  `json:"entries"`
		}
		if err := e.getJSON(ctx, "/v1/compliance-log/verify", tok, &v); err != nil {
			return err
		}
		if !v.OK || v.Entries != growthProbeEntries {
			return fmt.Errorf("verify %s: ok %v with %d entries, want ok with %d", growthLogAccount, v.OK, v.Entries, growthProbeEntries)
		}
		return nil
	})
	return err
}

// timeList times the list of the probe document's campaigns through the
// gateway.
func (e *env) timeList(ctx context.Context) (time.Duration, error) {
	tok, err := e.token(growthListAccount)
	if err != nil {
		return 0, err
	}
	return timed(func() error {
		var page struct {
			Campaigns []json.RawMessage `json:"campaigns"`
		}
		if err := e.getJSON(ctx, startPath(docOf(growthListAccount))+"?limit=50", tok, &page); err != nil {
			return err
		}
		if len(page.Campaigns) != growthListCampaigns {
			return fmt.Errorf("listed %d campaigns of %s, want %d", len(page.Campaigns), docOf(growthListAccount), growthListCampaigns)
		}
		return nil
	})
}

// seedCampaigns inserts n campaigns, 100 per account on one document of
// the account, in the campaign service's own layout (campaignseed): each
// document's record with its campaigns, their events already published.
func (e *env) seedCampaigns(ctx context.Context, n int) error {
	documents := e.mongo.Database(campaignseed.Database).Collection(campaignseed.DocumentsCollection)
	now := time.Now()
	var records []any
	var onDoc []campaignseed.Campaign
	flush := func(coll *mongo.Collection, docs []any) error {
		if len(docs) == 0 {
			return nil
		}
		_, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		return err
	}
	for i := range n {
		a := fmt.Sprintf("user_gs%05d", i/100)
		c, err := seedCampaign(startedEvent(e.ids, a, docOf(a), now))
		if err != nil {
			return err
		}
		onDoc = append(onDoc, c)
		if i%100 == 99 || i == n-1 {
			records = append(records, campaignseed.Record(campaignseed.Document{
				ID: docOf(a), AccountID: a, LoanStatus: "BEHIND", Version: 1, UpdatedAt: c.CreatedAt, Campaigns: onDoc,
			}))
			onDoc = nil
		}
		if len(records) == 100 {
			if err := flush(documents, records); err != nil {
				return err
			}
			records = records[:0]
		}
	}
	return flush(documents, records)
}

// checkSeeded reads the first seeded document's campaigns through the
// gateway: the service must see what was seeded as its own.
func (e *env) checkSeeded(ctx context.Context, n int) error {
	if n == 0 {
		return nil
	}
	a := "user_gs00000"
	tok, err := e.token(a)
	if err != nil {
		return err
	}
	var page struct {
		Campaigns []struct {
			Active         bool     `json:"active"`
			ActiveChannels []string `json:"activeChannels"`
		} `json:"campaigns"`
	}
	if err := e.getJSON(ctx, startPath(docOf(a))+"?limit=50", tok, &page); err != nil {
		return fmt.Errorf("read the seeded campaigns: %w", err)
	}
	want := min(n, 50)
	if len(page.Campaigns) != want {
		return fmt.Errorf("the service lists %d seeded campaigns of %s, want %d", len(page.Campaigns), docOf(a), want)
	}
	for _, c := range page.Campaigns {
		if !c.Active || !slices.Equal(c.ActiveChannels, []string{"sms", "email"}) {
			return fmt.Errorf("a seeded campaign of %s reads as %+v, want active on sms and email", docOf(a), c)
		}
	}
	return nil
}

// seedEntries writes each account's events as its log, from seq 1, as
// the compliance service stores it (dev/logseed: the hash-chained
// entries, their tree records, the head and tree size hints).
func (e *env) seedEntries(ctx context.Context, byAccount [][]events.Event) error {
	w := logseed.NewWriter(e.mongo.Database(complianceDB))
	at := events.FormatTime(time.Now())
	for _, evs := range byAccount {
		if len(evs) == 0 {
			continue
		}
		c := logseed.NewChain(evs[0].AccountID)
		for _, ev := range evs {
			data, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if err := w.Add(ctx, c, ev, data, at); err != nil {
				return err
			}
		}
	}
	return w.Close(ctx)
}
