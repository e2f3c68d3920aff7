package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/rcm-platform/rcm/dev/campaignseed"
	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/load"
	"github.com/rcm-platform/rcm/dev/stack"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// clearanceCalls are the outbound calls recorded on each document before
// the clearance is measured, each with a no_answer outcome: fewer than the
// limit of 7, so that every rule runs and every answer is allowed.
const clearanceCalls = 4

// clearanceDoc is one document of the clearance measurement and its
// campaign.
type clearanceDoc struct {
	account, doc, campaign, token string
}

// clearance measures the dry-run clearance through the gateway beside a
// plain read of the same document's record (its consent) through the
// gateway and a raw find of the record by _id on the store, on one stack,
// with the same workers over the same documents, in alternating rounds.
func clearance(ctx context.Context, e *env) (*Section, error) {
	cfg := e.cfg
	docs, err := e.clearanceDocs(ctx, names("user_c", cfg.ClearanceAccounts))
	if err != nil {
		return nil, err
	}
	if err := e.settle(ctx); err != nil {
		return nil, err
	}

	read := func(_ context.Context, _, i int) error {
		d := docs[i%len(docs)]
		var out struct {
			DocumentID string `json:"documentId"`
		}
		if err := e.getJSON(ctx, "/v1/documents/"+d.doc+"/consent", d.token, &out); err != nil {
			return err
		}
		if out.DocumentID != d.doc {
			return fmt.Errorf("consent of %s answered for %q", d.doc, out.DocumentID)
		}
		return nil
	}
	clear := func(_ context.Context, _, i int) error {
		d := docs[i%len(docs)]
		var out struct {
			Allowed bool    `json:"allowed"`
			Reason  *string `json:"reason"`
		}
		if err := e.getJSON(ctx, clearancePath(d), d.token, &out); err != nil {
			return err
		}
		if !out.Allowed {
			return fmt.Errorf("clearance of %s: not allowed (%v), want allowed", d.doc, out.Reason)
		}
		return nil
	}
	records := e.mongo.Database(campaignseed.Database).Collection(campaignseed.DocumentsCollection)
	raw := func(_ context.Context, _, i int) error {
		d := docs[i%len(docs)]
		// The whole record, as the campaign service reads it: a record's
		// _id is its document's.
		rec, err := records.FindOne(ctx, bson.D{{Key: "_id", Value: d.doc}}).Raw()
		if err != nil {
			return fmt.Errorf("find the record of %s: %w", d.doc, err)
		}
		if id, ok := rec.Lookup("_id").StringValueOK(); !ok || id != d.doc {
			return fmt.Errorf("find the record of %s: found %v", d.doc, rec.Lookup("_id"))
		}
		return nil
	}
	var reads, clears, raws pathRuns
	for round := range cfg.Rounds {
		for _, p := range []struct {
			phase string
			op    load.Op
			runs  *pathRuns
		}{{"clearance-raw", raw, &raws}, {"clearance-read", read, &reads}, {"clearance", clear, &clears}} {
			e.logf("%s round %d: %d workers for %s", p.phase, round+1, cfg.Concurrency, cfg.ClearanceDuration)
			res, _, err := e.closedLoop(ctx, p.phase, cfg.ClearanceDuration, p.op)
			if err != nil {
				return nil, err
			}
			e.logf("  %s, p50 %s, p99 %s", fmtRate(res.Rate()), fmtDur(res.Latencies.Percentile(50)), fmtDur(res.Latencies.Percentile(99)))
			p.runs.rounds = append(p.runs.rounds, res)
		}
	}
	readTotal, clearTotal, rawTotal := reads.total(), clears.total(), raws.total()

	sec := &Section{
		Title:  "Contact clearance through the gateway, beside a plain read of the document and the store's raw find",
		Header: []string{"request", "requests", "requests/s", "per round", "p50", "p99", "errors", "rate vs plain read", "rate vs raw find"},
	}
	add := func(name string, r *load.Result, rounds string) {
		sec.row(name, fmtInt(r.Ops), fmtRate(r.Rate()), rounds, fmtDur(r.Latencies.Percentile(50)), fmtDur(r.Latencies.Percentile(99)),
			fmtInt(r.Errors), fmtRatio(ratio(r.Rate(), readTotal.Rate())), fmtRatio(ratio(r.Rate(), rawTotal.Rate())))
	}
	add("raw FindOne by _id of the same documents' records", &rawTotal, raws.rates())
	add("plain read: GET /v1/documents/{id}/consent", &readTotal, reads.rates())
	add("clearance: GET /v1/documents/{id}/contact-clearance?channel=call&campaignId=…", &clearTotal, clears.rates())
	sec.note("%d closed-loop workers for %s per round (after a %s warm-up), over %d accounts with one BEHIND document each; "+
		"%d rounds, the raw find, the plain read and the clearance alternating on one stack; the rate is all rounds' requests over all "+
		"rounds' time, the percentiles are of all their latencies. Every answer was checked: the record of the document "+
		"asked for, its consent, and the clearance allowed.", cfg.Concurrency, cfg.ClearanceDuration, cfg.Warmup, cfg.ClearanceAccounts, cfg.Rounds)
	sec.note("Dry-run clearance through the gateway ÷ the store's raw find by _id, same run: %s (target ≥ 0.5). The raw find "+
		"is this process's MongoDB driver (the client of the other raw baselines) reading each document's whole record by _id "+
		"from the campaign service's collection on the same embedded store, with the same workers; it is the one store "+
		"command a clearance needs.", fmtRatio(ratio(clearTotal.Rate(), rawTotal.Rate())))
	sec.note("Each document has a campaign started on sms, email and call and %d allowed outbound calls recorded through the "+
		"gateway, each with a no_answer outcome, its borrower in a fixed-offset time zone where the run falls in the "+
		"afternoon; every event was published and recorded before the first round. Both requests go through the gateway "+
		"(token check, query validation, signed forward) to the campaign service, which reads the document's record once by "+
		"_id; the clearance then evaluates every rule at the server's time (campaign, loan, consent, channel, contact "+
		"hours in the borrower's zone, the 168-hour call limit over the recorded calls, the conversation cooldown) and "+
		"records nothing.", clearanceCalls)
	if readTotal.Errors+clearTotal.Errors+rawTotal.Errors > 0 {
		sec.note("First errors: raw find %v; plain read %v; clearance %v.", rawTotal.FirstErr, readTotal.FirstErr, clearTotal.FirstErr)
	}
	return sec, nil
}

func clearancePath(d clearanceDoc) string {
	return "/v1/documents/" + d.doc + "/contact-clearance?channel=call&campaignId=" + d.campaign
}

// afternoonZone is a fixed-offset IANA zone in which now is between 10:00
// and 18:00 local: contact hours, hours away from either end, so that a
// run's calls are allowed whenever it starts. Etc/GMT-N is UTC+N.
func afternoonZone(now time.Time) string {
	offset := 14 - now.UTC().Hour() // -9 .. +14
	switch {
	case offset == 0:
		return "Etc/UTC"
	case offset > 0:
		return fmt.Sprintf("Etc/GMT-%d", offset)
	default:
		return fmt.Sprintf("Etc/GMT+%d", -offset)
	}
}

// clearanceDocs publishes one BEHIND document per account, its borrower in
// afternoonZone, and through the gateway starts a campaign on it and
// records clearanceCalls calls with their outcomes.
func (e *env) clearanceDocs(ctx context.Context, accounts []string) ([]clearanceDoc, error) {
	zone := afternoonZone(time.Now())
	e.logf("publishing %d BEHIND documents, borrowers in %s", len(accounts), zone)
	docs := make([]stack.Document, 0, len(accounts))
	for _, a := range accounts {
		docs = append(docs, stack.Document{ID: docOf(a), AccountID: a, Loan: &stack.Loan{Status: "BEHIND"}, Version: 1,
			Borrower: &stack.Borrower{TimeZone: zone}})
	}
	if err := e.stk.PutDocuments(ctx, docs...); err != nil {
		return nil, err
	}
	tokens, err := e.tokens(accounts)
	if err != nil {
		return nil, err
	}
	out := make([]clearanceDoc, len(accounts))
	e.logf("starting a campaign and recording %d calls with outcomes on each", clearanceCalls)
	res, err := load.Run(ctx, load.Config{Workers: e.cfg.Concurrency, Count: len(accounts)}, func(_ context.Context, _, i int) error {
		d := clearanceDoc{account: accounts[i], doc: docOf(accounts[i]), token: tokens[accounts[i]]}
		body, err := e.post(ctx, startPath(d.doc), d.token, clearanceStartBody, http.StatusCreated)
		if err != nil {
			return err
		}
		if d.campaign, err = campaignID(body); err != nil {
			return err
		}
		attempt := fmt.Appendf(nil, `{"campaignId":%q,"channel":"call"}`, d.campaign)
		for range clearanceCalls {
			body, err := e.post(ctx, "/v1/documents/"+d.doc+"/contact-attempts", d.token, attempt, http.StatusCreated)
			if err != nil {
				return err
			}
			var a struct {
				Attempt struct {
					ID string `json:"id"`
				} `json:"attempt"`
			}
			if err := json.Unmarshal(body, &a); err != nil || a.Attempt.ID == "" {
				return fmt.Errorf("no attempt in %q", body)
			}
			if _, err := e.post(ctx, "/v1/documents/"+d.doc+"/contact-attempts/"+a.Attempt.ID+"/outcome", d.token,
				[]byte(`{"outcome":"no_answer"}`), http.StatusOK); err != nil {
				return err
			}
		}
		out[i] = d
		return nil
	})
	// Every request that answered wrote events the relay publishes: a
	// start, and an attempt and an outcome per call.
	e.started += res.Ops * (1 + 2*clearanceCalls)
	if err != nil {
		return nil, err
	}
	if res.Errors > 0 {
		return nil, fmt.Errorf("set up %d of %d documents: %w", res.Errors, len(accounts), res.FirstErr)
	}
	return out, nil
}

// clearanceStartBody starts a campaign on every channel.
var clearanceStartBody = []byte(`{"sms":true,"email":true,"call":true,"tone":"professional and empathetic",` +
	`"cadence":"day 1, day 5, day 14"}`)

// post sends a command through the gateway and returns the body of an
// answer with status want.
func (e *env) post(ctx context.Context, path, tok string, body []byte, want int) ([]byte, error) {
	req, err := e.gatewayRequest(ctx, http.MethodPost, path, tok, body)
	if err != nil {
		return nil, err
	}
	return e.do(e.http, req, want)
}
