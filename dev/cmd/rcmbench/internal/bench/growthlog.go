package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/load"
	"github.com/rcm-platform/rcm/dev/logseed"
	"github.com/rcm-platform/rcm/pkg/events"
)

// The accounts of the log's growth figures: proofs and checkpoints of a
// log of 100 entries against one of GrowthLargeEntries, and verify of a
// log of 1,000 against the same large one.
const (
	growthSmallAccount = "user_glog100"
	growthSmallEntries = 100
	growthMidAccount   = "user_glog1k"
	growthMidEntries   = 1_000
	growthLargeAccount = "user_gloglarge"
	// proofSamples is how many inclusion proofs are timed per account.
	proofSamples = 20
	// checkpointRounds is how many appended events' checkpoints are timed
	// per account (the loop signs an account at most once a second).
	checkpointRounds = 3
	// verifyWait bounds one cold verify, retried through the gateway's
	// timeouts until it answers.
	verifyWait = 30 * time.Minute
)

// logTimes are one account's timed log reads.
type logTimes struct {
	checkpoint, checkpointGet, inclusion, consistency time.Duration
	verify                                            time.Duration
	verified                                          int64
}

// growthLog seeds the accounts of the log's growth figures straight into
// the compliance database (dev/logseed), appends events to them through
// the topic so that the service signs them, and times checkpoints,
// proofs and cold verifies on the small and the large log.
func growthLog(ctx context.Context, e *env) (*Section, error) {
	large := e.cfg.GrowthLargeEntries
	e.logf("growth: seeding one account of %s log entries and two of %d and %s", fmtInt(large), growthSmallEntries, fmtInt(growthMidEntries))
	t := time.Now()
	for _, a := range []struct {
		account string
		n       int
	}{{growthSmallAccount, growthSmallEntries}, {growthMidAccount, growthMidEntries}, {growthLargeAccount, large}} {
		if err := e.seedLog(ctx, a.account, a.n); err != nil {
			return nil, err
		}
	}
	seedTook := time.Since(t)
	e.logf("  %s (%s)", fmtDur(seedTook), fmtRate(float64(large+growthSmallEntries+growthMidEntries)/seedTook.Seconds()))

	small, err := e.timeLog(ctx, growthSmallAccount, growthSmallEntries, false)
	if err != nil {
		return nil, err
	}
	mid, err := e.timeLog(ctx, growthMidAccount, growthMidEntries, true)
	if err != nil {
		return nil, err
	}
	big, err := e.timeLog(ctx, growthLargeAccount, large, true)
	if err != nil {
		return nil, err
	}

	sec := &Section{
		Title:  fmt.Sprintf("Growth: one account's log of %d entries against %s", growthSmallEntries, fmtInt(large)),
		Header: []string{"figure", fmt.Sprintf("%d entries", growthSmallEntries), fmt.Sprintf("%s entries", fmtInt(large)), "ratio"},
	}
	durRow := func(name string, a, b time.Duration) {
		sec.row(name, fmtDur(a), fmtDur(b), fmtRatio(ratio(float64(b), float64(a))))
	}
	durRow(fmt.Sprintf("inclusion proof through the gateway, median of %d", proofSamples), small.inclusion, big.inclusion)
	durRow("consistency proof between the first and last checkpoints, median of 5", small.consistency, big.consistency)
	durRow(fmt.Sprintf("checkpoint: one event produced → its checkpoint served, median of %d", checkpointRounds), small.checkpoint, big.checkpoint)
	durRow("read the latest checkpoint, median of 5", small.checkpointGet, big.checkpointGet)
	midRate, bigRate := float64(mid.verified)/mid.verify.Seconds(), float64(big.verified)/big.verify.Seconds()
	sec.row(fmt.Sprintf("verify one account, cold: entries/s (%s entries against %s)", fmtInt(int(mid.verified)), fmtInt(int(big.verified))),
		fmtRate(midRate), fmtRate(bigRate), fmtRatio(ratio(bigRate, midRate)))
	sec.row("verify one account, cold: time", fmtDur(mid.verify), fmtDur(big.verify), "–")
	sec.note("Seeded into the full store of the growth section with dev/logseed (the service's own documents: entries, "+
		"tree records, head and tree size hints; InsertMany batches of 1,000, streamed): accounts of %d, %s and %s entries in %s. "+
		"The signing loop lists accounts only at start, so each account then gets events produced to the topic one at a time "+
		"(%d each), as the relay publishes them; the checkpoint figure is the time from one produce until "+
		"GET /v1/compliance-log/checkpoint serves that size (the consumer's append, the loop's tick of 200 ms and its gap of 1 s "+
		"between two checkpoints of an account included).", growthSmallEntries, fmtInt(growthMidEntries), fmtInt(large), fmtDur(seedTook), checkpointRounds)
	sec.note("Proofs: GET /v1/compliance-log/entries/{seq}/proof for %d seqs spread over the log, and GET "+
		"/v1/compliance-log/consistency between the first and the last checkpoint signed. Verify is cold: one more event "+
		"is appended and waited for first, so that the answer is computed afresh (a result is reused only while the head "+
		"has not moved); the right column is the %s-entry account, the left one an account of %s entries in the same store. "+
		"A verify longer than the gateway's 15 s upstream timeout is asked again until it answers: the computation runs to its "+
		"end and a second request for the same head waits for it; the figure is from the first request to the answer.",
		proofSamples, fmtInt(large), fmtInt(growthMidEntries))
	if large < 1_000_000 {
		sec.note("make bench seeds %s entries in the large account to stay within its time; make bench-growth runs this "+
			"scenario alone with 1,000,000.", fmtInt(large))
	}
	return sec, nil
}

// seedLog writes n entries of account from seq 1 as the service stores
// them, built and inserted a batch of 1,000 at a time (logseed.Writer).
func (e *env) seedLog(ctx context.Context, account string, n int) error {
	w := logseed.NewWriter(e.mongo.Database(complianceDB))
	c := logseed.NewChain(account)
	now := time.Now()
	at := events.FormatTime(now)
	for range n {
		ev := startedEvent(e.ids, account, docOf(account), now)
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		if err := w.Add(ctx, c, ev, data, at); err != nil {
			return err
		}
	}
	return w.Close(ctx)
}

// timeLog times account's checkpoints and proofs (and its cold verify
// when verify is set); n is how many entries it holds.
func (e *env) timeLog(ctx context.Context, account string, n int, verify bool) (logTimes, error) {
	var out logTimes
	tok, err := e.token(account)
	if err != nil {
		return out, err
	}
	size := int64(n)
	var sizes []int64
	var cps load.Latencies
	for range checkpointRounds {
		size++
		t := time.Now()
		if err := e.appendOne(ctx, account); err != nil {
			return out, err
		}
		if err := e.waitCheckpoint(ctx, tok, size); err != nil {
			return out, fmt.Errorf("checkpoint of %s at %d: %w", account, size, err)
		}
		cps.Add(time.Since(t))
		sizes = append(sizes, size)
	}
	out.checkpoint = cps.Percentile(50)
	e.logf("  %s: checkpoint %s", account, fmtDur(out.checkpoint))
	if out.checkpointGet, err = timed(func() error {
		_, err := e.checkpointSize(ctx, tok)
		return err
	}); err != nil {
		return out, err
	}
	var incl load.Latencies
	for i := range proofSamples {
		seq := 1 + int64(i)*(size-1)/proofSamples
		t := time.Now()
		body, err := e.getText(ctx, fmt.Sprintf("/v1/compliance-log/entries/%d/proof", seq), tok)
		if err != nil {
			return out, err
		}
		if !bytes.HasPrefix(body, []byte("c2sp.org/tlog-proof@v1\n")) {
			return out, fmt.Errorf("proof of %s at %d: %q", account, seq, body)
		}
		incl.Add(time.Since(t))
	}
	out.inclusion = incl.Percentile(50)
	if out.consistency, err = timed(func() error {
		var p struct {
			Proof []string `json:"proof"`
		}
		if err := e.getJSON(ctx, fmt.Sprintf("/v1/compliance-log/consistency?from=%d&to=%d", sizes[0], sizes[len(sizes)-1]), tok, &p); err != nil {
			return err
		}
		if len(p.Proof) == 0 {
			return fmt.Errorf("consistency of %s from %d to %d: no proof", account, sizes[0], sizes[len(sizes)-1])
		}
		return nil
	}); err != nil {
		return out, err
	}
	e.logf("  %s: inclusion %s, consistency %s", account, fmtDur(out.inclusion), fmtDur(out.consistency))
	if !verify {
		return out, nil
	}
	size++
	if err := e.appendOne(ctx, account); err != nil {
		return out, err
	}
	if err := e.waitHead(ctx, tok, size); err != nil {
		return out, err
	}
	t := time.Now()
	if err := e.verifyCold(ctx, tok, size); err != nil {
		return out, fmt.Errorf("verify %s: %w", account, err)
	}
	out.verify, out.verified = time.Since(t), size
	e.logf("  %s: verify of %s entries %s", account, fmtInt(int(size)), fmtDur(out.verify))
	return out, nil
}

// appendOne produces one campaign_started event of account, as the relay
// publishes it.
func (e *env) appendOne(ctx context.Context, account string) error {
	recs, err := records(startedEvent(e.ids, account, docOf(account), time.Now()))
	if err != nil {
		return err
	}
	return e.kafka.ProduceSync(ctx, recs...).FirstErr()
}

// poll calls cond every 20 ms until it reports done, for up to 2 minutes.
func poll(ctx context.Context, what string, cond func() (bool, error)) error {
	wait, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		select {
		case <-wait.Done():
			return fmt.Errorf("%s: %w", what, wait.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitCheckpoint waits until the latest checkpoint served has size.
func (e *env) waitCheckpoint(ctx context.Context, tok string, size int64) error {
	return poll(ctx, fmt.Sprintf("checkpoint of size %d", size), func() (bool, error) {
		got, err := e.checkpointSize(ctx, tok)
		if err != nil && !strings.Contains(err.Error(), ": 404 ") {
			return false, err
		}
		return got >= size, nil
	})
}

// checkpointSize reads the size of the latest checkpoint.
func (e *env) checkpointSize(ctx context.Context, tok string) (int64, error) {
	body, err := e.getText(ctx, "/v1/compliance-log/checkpoint", tok)
	if err != nil {
		return 0, err
	}
	lines := strings.SplitN(string(body), "\n", 3)
	if len(lines) < 3 {
		return 0, fmt.Errorf("checkpoint %q", body)
	}
	return strconv.ParseInt(lines[1], 10, 64)
}

// waitHead waits until the newest entry of the log is seq.
func (e *env) waitHead(ctx context.Context, tok string, seq int64) error {
	return poll(ctx, fmt.Sprintf("entry %d", seq), func() (bool, error) {
		var page struct {
			Entries []struct {
				Seq int64 `json:"seq"`
			} `json:"entries"`
		}
		if err := e.getJSON(ctx, "/v1/compliance-log?limit=1", tok, &page); err != nil {
			return false, err
		}
		return len(page.Entries) == 1 && page.Entries[0].Seq >= seq, nil
	})
}

// verifyCold asks for the verify of the log until it answers ok with
// entries: a verify that outlasts the gateway's timeout goes on, and the
// same question waits for it.
func (e *env) verifyCold(ctx context.Context, tok string, entries int64) error {
	wait, cancel := context.WithTimeout(ctx, verifyWait)
	defer cancel()
	for {
		req, err := e.gatewayRequest(wait, http.MethodGet, "/v1/compliance-log/verify", tok, nil)
		if err != nil {
			return err
		}
		resp, err := e.http.Do(req)
		if err != nil {
			if wait.Err() != nil {
				return err
			}
			continue // the bench client's own timeout: ask again
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var v struct {
				OK      bool  `json:"ok"`
				Entries int64 `json:"entries"`
			}
			if err := json.Unmarshal(body, &v); err != nil || !v.OK || v.Entries != entries {
				return fmt.Errorf("verify answered %s, want ok with %d entries", body, entries)
			}
			return nil
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			continue
		default:
			return fmt.Errorf("verify: %d %s", resp.StatusCode, bytes.TrimSpace(body))
		}
	}
}

// getText returns the body of the 200 answer of a gateway read.
func (e *env) getText(ctx context.Context, path, tok string) ([]byte, error) {
	req, err := e.gatewayRequest(ctx, http.MethodGet, path, tok, nil)
	if err != nil {
		return nil, err
	}
	return e.do(e.http, req, http.StatusOK)
}
