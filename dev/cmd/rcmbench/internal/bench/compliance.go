package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/dev/logseed"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// accountEvents returns n valid campaign_started events spread evenly
// over accounts, grouped account by account in that order.
func (e *env) accountEvents(accounts []string, n int) [][]events.Event {
	out := make([][]events.Event, len(accounts))
	now := time.Now()
	for i, a := range accounts {
		k := n / len(accounts)
		if i < n%len(accounts) {
			k++
		}
		for range k {
			out[i] = append(out[i], startedEvent(e.ids, a, docOf(a), now))
		}
	}
	return out
}

// records encodes events as the relay publishes them.
func records(evs ...events.Event) ([]*kgo.Record, error) {
	out := make([]*kgo.Record, 0, len(evs))
	for _, ev := range evs {
		m, err := events.NewMessage(ev, "")
		if err != nil {
			return nil, err
		}
		out = append(out, kafkarec.Record(m, events.Topic))
	}
	return out, nil
}

// complianceAppend produces a burst of events and measures how fast the
// compliance service makes them durable, against raw batched inserts of
// the same entries into the same store.
func complianceAppend(ctx context.Context, e *env) (*Section, error) {
	cfg := e.cfg
	n := cfg.ComplianceEvents
	accounts := names("user_c", cfg.ComplianceAccounts)
	byAccount := e.accountEvents(accounts, n)
	var all []events.Event
	for _, evs := range byAccount {
		all = append(all, evs...)
	}
	recs, err := records(all...)
	if err != nil {
		return nil, err
	}
	batch := len(byAccount[0])
	if err := e.settle(ctx); err != nil {
		return nil, err
	}

	// The feed appends the same events to the same store; stopped, it
	// leaves compliance the store to itself, as the raw baseline has it.
	e.logf("compliance append: %s events over %d accounts, the feed stopped", fmtInt(n), len(accounts))
	feed := e.stk.Process(stack.Feed)
	if err := feed.Stop(); err != nil {
		return nil, fmt.Errorf("stop the feed: %w", err)
	}
	cmdsBefore, err := e.commandsByName(ctx, stack.Compliance)
	if err != nil {
		return nil, err
	}
	signedBefore, err := e.metric(ctx, stack.Compliance, checkpointsSigned)
	if err != nil {
		return nil, err
	}
	batchesBefore, err := e.metric(ctx, stack.Compliance, appendBatches)
	if err != nil {
		return nil, err
	}
	wait := e.profile(ctx, "compliance-append", 5*time.Second)
	cpu0 := e.cpuNow()
	start := time.Now()
	if err := e.kafka.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}
	produced := time.Since(start)
	if err := e.waitLag(ctx, groupCompliance); err != nil {
		return nil, err
	}
	appendTook := time.Since(start)
	appendCPU := e.cpuSince(cpu0)
	cmdsAfter, err := e.commandsByName(ctx, stack.Compliance)
	if err != nil {
		return nil, err
	}
	cmds, cmdCount := commandsSince(cmdsBefore, cmdsAfter)
	signedAfter, err := e.metric(ctx, stack.Compliance, checkpointsSigned)
	if err != nil {
		return nil, err
	}
	batchesAfter, err := e.metric(ctx, stack.Compliance, appendBatches)
	if err != nil {
		return nil, err
	}
	signed, partitionBatches := int(signedAfter-signedBefore), int(batchesAfter-batchesBefore)
	e.logf("  %d partition batches, %d checkpoints signed", partitionBatches, signed)
	wait()
	e.logf("  %s entries (produced in %s); store commands: %s", fmtRate(float64(n)/appendTook.Seconds()), fmtDur(produced), cmds)

	// The chain of one account, recomputed by the service through the
	// gateway: the entries are what the log should hold.
	tok, err := e.token(accounts[0])
	if err != nil {
		return nil, err
	}
	req, err := e.gatewayRequest(ctx, http.MethodGet, "/v1/compliance-log/verify", tok, nil)
	if err != nil {
		return nil, err
	}
	body, err := e.do(e.http, req, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var v struct {
		OK      bool `json:"ok"`
		Entries int  `json:"entries"`
	}
	if err := json.Unmarshal(body, &v); err != nil || !v.OK || v.Entries != len(byAccount[0]) {
		return nil, fmt.Errorf("verify %s after the burst: %s", accounts[0], body)
	}

	e.logf("raw InsertMany of the same entries and tree records, batches of %d", batch)
	rawTook, rawCPU, err := e.rawInsertMany(ctx, byAccount)
	if err != nil {
		return nil, err
	}
	e.logf("  %s entries", fmtRate(float64(n)/rawTook.Seconds()))

	e.logf("the feed catching up on the burst")
	start = time.Now()
	if err := feed.Start(ctx); err != nil {
		return nil, fmt.Errorf("start the feed: %w", err)
	}
	if err := e.waitLag(ctx, groupFeed); err != nil {
		return nil, err
	}
	feedTook := time.Since(start)
	if err := e.settle(ctx); err != nil {
		return nil, err
	}

	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	sec := &Section{
		Title:  "Compliance log append throughput",
		Header: []string{"writer", "entries", "time", "entries/s", "vs raw InsertMany"},
	}
	sec.row("compliance service (consume, validate, hash-chain, tree, a fetch's accounts in a few InsertMany, commit)", fmtInt(n), fmtDur(appendTook),
		fmtRate(rate(appendTook)), fmtRatio(ratio(rate(appendTook), rate(rawTook))))
	sec.row(fmt.Sprintf("raw InsertMany of the same entries and their tree records, batches of %d, one writer", batch), fmtInt(n), fmtDur(rawTook),
		fmtRate(rate(rawTook)), "1.00×")
	sec.row("feed service catching up on the same events (restart included; its items are smaller than entries)",
		fmtInt(n), fmtDur(feedTook), fmtRate(rate(feedTook)), "–")
	sec.note("%s valid campaign_started events (pkg/events) over %d accounts, produced to %s in one burst (%s), account "+
		"after account, so that the service's batches hold about %d entries of one account, as the raw batches do. "+
		"Timed from the first produce until the compliance group committed the last record, which it does only after "+
		"the entries are written. The feed was stopped meanwhile, so compliance had the store to itself, as the raw "+
		"writer had; then it was started again and its catch-up timed.", fmtInt(n), len(accounts), events.Topic, fmtDur(produced), batch)
	sec.note("Raw: the same entries as pkg/auditlog.Doc (hash chain computed beforehand) and the records of their Merkle "+
		"tree, as the service stores them (dev/logseed, checked against the service's own writes by its tests), inserted "+
		"per account with an ordered InsertMany of the entries and an unordered one of the records, into a scratch database "+
		"of the same store, with the log's two unique indexes. Afterwards the service verified the chain and tree of %s "+
		"through the gateway: ok, %d entries.", accounts[0], v.Entries)
	sec.note("Store commands the compliance service sent during the burst (its MongoDB command monitor: count, and "+
		"time summed over commands in flight): %s in all, %.1f per 100 entries; %s. They include those of the "+
		"checkpoints signed meanwhile (%d, at most one per account per second: spec/transparency.md), which the service "+
		"signs in rounds of the accounts due, at most one round a Tick of 200 ms (the last checkpoints of those it has not signed before in one find, their trees' edges and consistency "+
		"proofs in another, the checkpoints in one insert) and delivers together (their cosignatures in one insert, their "+
		"publication marks in a write per 16 accounts); the appends came in %d partition batches. The raw writer sent %d.",
		fmtInt(int(cmdCount)), 100*cmdCount/float64(n), cmds, signed, partitionBatches, 2*len(byAccount))
	target := 0.8 * rate(rawTook)
	perEntry := func(d time.Duration) string {
		return fmt.Sprintf("%.0f µs", float64(d)/float64(n)/float64(time.Microsecond))
	}
	// cores is how many cores the CPU d, spent on n entries, keeps busy
	// at perSecond entries a second.
	cores := func(perSecond float64, d time.Duration) float64 {
		return perSecond * float64(d) / float64(n) / float64(time.Second)
	}
	sec.note("CPU per entry (each service's utime and stime from /proc/<pid>/stat, this process's rusage): during the burst, "+
		"compliance %s and this process (the embedded store and broker) %s; during the raw insert, this process (the store and "+
		"the raw writer) %s, compliance %s. At 0.8× of the raw rate (%s, the target) the burst's work would keep %.2f of this "+
		"machine's %d cores busy; the raw insert kept %.2f busy at its own rate.",
		perEntry(appendCPU[stack.Compliance]), perEntry(appendCPU["rcmbench"]), perEntry(rawCPU["rcmbench"]),
		perEntry(rawCPU[stack.Compliance]), fmtRate(target), cores(target, appendCPU[stack.Compliance]+appendCPU["rcmbench"]),
		runtime.NumCPU(), cores(rate(rawTook), rawCPU["rcmbench"]+rawCPU[stack.Compliance]))
	return sec, nil
}

// checkpointsSigned counts the checkpoints the compliance service signed
// and stored; appendBatches the partition batches it appended.
const (
	checkpointsSigned = "rcm_log_checkpoints_signed_total"
	appendBatches     = "rcm_compliance_append_batch_duration_seconds_count"
)

// waitLag waits until the group has committed every record of the event
// topic.
func (e *env) waitLag(ctx context.Context, group string) error {
	wait, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		lag, err := e.lag(wait, group)
		if err != nil {
			return err
		}
		if lag == 0 {
			return nil
		}
		select {
		case <-wait.Done():
			return fmt.Errorf("%s still %d records behind: %w", group, lag, wait.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// rawInsertMany inserts each account's entries, chained, with one
// ordered InsertMany per account, and its tree records (logseed: the
// documents the service writes) with one more, and returns the time the
// inserts took and the CPU each process used meanwhile.
func (e *env) rawInsertMany(ctx context.Context, byAccount [][]events.Event) (time.Duration, cpuUse, error) {
	db := e.mongo.Database(scratchDB)
	entries, records := db.Collection(logseed.EntriesCollection), db.Collection(logseed.HashesCollection)
	if err := ensureEntryIndexes(ctx, entries); err != nil {
		return 0, nil, err
	}
	type account struct{ entries, records []any }
	docs := make([]account, 0, len(byAccount))
	at := events.FormatTime(time.Now())
	for _, evs := range byAccount {
		var a account
		c := logseed.NewChain(evs[0].AccountID)
		for _, ev := range evs {
			data, err := json.Marshal(ev)
			if err != nil {
				return 0, nil, err
			}
			en, rec, err := c.Add(ev, data, at)
			if err != nil {
				return 0, nil, err
			}
			a.entries, a.records = append(a.entries, en), append(a.records, rec)
		}
		docs = append(docs, a)
	}
	cpu0 := e.cpuNow()
	start := time.Now()
	for _, a := range docs {
		if _, err := entries.InsertMany(ctx, a.entries, options.InsertMany().SetOrdered(true)); err != nil {
			return 0, nil, err
		}
		if _, err := records.InsertMany(ctx, a.records, options.InsertMany().SetOrdered(false)); err != nil {
			return 0, nil, err
		}
	}
	took := time.Since(start) // before reading the CPU, which is not part of the inserts
	return took, e.cpuSince(cpu0), nil
}

// commandUse is what a service's store commands of one name cost.
type commandUse struct {
	count   float64
	seconds float64
}

// commandsByName reads the service's store commands so far, by command
// name (its MongoDB command monitor: storeCommands and
// storeCommandSeconds, every outcome).
func (e *env) commandsByName(ctx context.Context, service string) (map[string]commandUse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.stk.URL(service)+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]commandUse{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		count := strings.HasPrefix(line, storeCommands+"{")
		if !count && !strings.HasPrefix(line, storeCommandSeconds+"{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `command="`)
		name, _, _ := strings.Cut(rest, `"`)
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", service, line, err)
		}
		u := out[name]
		if count {
			u.count += v
		} else {
			u.seconds += v
		}
		out[name] = u
	}
	return out, sc.Err()
}

// commandsSince returns the commands of after not in before, as "name
// count (seconds)" in name order, and their total count.
func commandsSince(before, after map[string]commandUse) (string, float64) {
	var names []string
	for name := range after {
		names = append(names, name)
	}
	slices.Sort(names)
	var parts []string
	var total float64
	for _, name := range names {
		n := after[name].count - before[name].count
		if n <= 0 {
			continue
		}
		total += n
		parts = append(parts, fmt.Sprintf("%s %s (%s)", name, fmtInt(int(n)),
			fmtDur(time.Duration((after[name].seconds-before[name].seconds)*float64(time.Second)))))
	}
	return strings.Join(parts, ", "), total
}
