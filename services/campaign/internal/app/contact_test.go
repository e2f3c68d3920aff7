package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/app/apptest"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// clock is a settable clock for the rules' time.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }

// contactFixture is the use cases on a clock set to a Tuesday 10:00 in
// Chicago, with a metrics registry to read.
type contactFixture struct {
	*fixture
	clock *clock
	reg   *prometheus.Registry
}

var tuesday10CT = time.Date(2026, 5, 5, 15, 0, 0, 0, time.UTC)

func newContactFixture(t *testing.T) *contactFixture {
	t.Helper()
	f := newFixture(t)
	c := &contactFixture{fixture: f, clock: newClock(tuesday10CT), reg: prometheus.NewRegistry()}
	f.app = c.on(f.store, f.relay, c.reg)
	return c
}

// on returns use cases on st with the fixture's clock and claims.
func (c *contactFixture) on(st *store.Store, relay app.Relay, reg prometheus.Registerer) *app.Campaigns {
	gen := ids.NewGenerator(time.Now)
	return app.New(app.Config{Store: st, Relay: relay, Claims: c.claims, NewID: gen.New, Now: c.clock.now,
		Logger: logger, Registerer: reg})
}

func (c *contactFixture) putBorrower(t *testing.T, id, tz, state string) {
	t.Helper()
	doc := campaign.Document{ID: id, AccountID: alice.AccountID, Loan: &campaign.Loan{Status: "BEHIND"}, Version: 1,
		Borrower: campaign.Borrower{TimeZone: tz, State: state}}
	if err := c.app.ApplyDocument(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
}

// attempt sends a contact attempt and returns its answer's status and
// attempt record (the 201's, or the 409's details).
func (c *contactFixture) attempt(t *testing.T, uc *app.Campaigns, key string, in app.AttemptInput) (int, map[string]any) {
	t.Helper()
	ans, err := uc.ContactAttempt(context.Background(), app.Request{Principal: alice, Key: key, Fingerprint: key}, in)
	if err != nil {
		// As the API renders it.
		status, body, ok := httpx.Render(err)
		if !ok || status >= 500 {
			t.Fatalf("attempt: %v", err)
		}
		ans = app.Answer{Status: status, Body: body}
	}
	var body map[string]any
	if err := json.Unmarshal(ans.Body, &body); err != nil {
		t.Fatal(err)
	}
	if ans.Status == http.StatusCreated {
		return ans.Status, body["attempt"].(map[string]any)
	}
	if d, ok := body["details"].(map[string]any); ok {
		d["error"] = body["error"]
		return ans.Status, d
	}
	return ans.Status, body
}

func call(documentID, campaignID string) app.AttemptInput {
	return app.AttemptInput{DocumentID: documentID, CampaignID: campaignID, Channel: "call"}
}

// TestSeventhCallRace: six calls recorded, then attempts that could each
// be the seventh race on two replicas: exactly one is allowed, the others
// are blocked (and recorded) with the instant the first call leaves the
// window.
func TestSeventhCallRace(t *testing.T) {
	t.Parallel()
	c := newContactFixture(t)
	c.putBorrower(t, "doc_7", "America/Chicago", "")
	id := c.startWith(t, alice, "doc_7", false, false, true).ID
	first := c.clock.now()
	for i := range 6 {
		if status, a := c.attempt(t, c.app, "", call("doc_7", id)); status != http.StatusCreated || a["decision"] != "allowed" {
			t.Fatalf("call %d: %d %v", i+1, status, a)
		}
		c.clock.add(time.Minute)
	}
	cl, err := mongox.Connect(mongotest.URI(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	otherReg := prometheus.NewRegistry()
	replicas := []*app.Campaigns{c.app, c.on(store.New(cl.Database(c.db)), &apptest.Relay{}, otherReg)}

	const racers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	var blocked []map[string]any
	for i := range racers {
		wg.Go(func() {
			status, a := c.attempt(t, replicas[i%2], "", call("doc_7", id))
			mu.Lock()
			defer mu.Unlock()
			statuses[status]++
			if status == http.StatusConflict {
				blocked = append(blocked, a)
			}
		})
	}
	wg.Wait()
	if statuses[http.StatusCreated] != 1 || statuses[http.StatusConflict] != racers-1 {
		t.Fatalf("answers %v, want exactly one 201 and %d 409", statuses, racers-1)
	}
	wantNext := events.FormatTime(first.Add(168 * time.Hour))
	for _, b := range blocked {
		if b["reason"] != "call_frequency_limit" || b["nextAllowedAt"] != wantNext || b["attemptId"] == nil {
			t.Fatalf("blocked %v, want call_frequency_limit until %s", b, wantNext)
		}
	}
	page, err := c.app.Attempts(context.Background(), alice, "doc_7", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Attempts) != 6+racers {
		t.Fatalf("the document lists %d attempts, want %d (blocked ones too)", len(page.Attempts), 6+racers)
	}
	count := func(decision, reason string) float64 {
		return testutil.ToFloat64(mustCounter(t, c.reg, "call", decision, reason)) + testutil.ToFloat64(mustCounter(t, otherReg, "call", decision, reason))
	}
	if allowed, limited := count("allowed", "none"), count("blocked", "call_frequency_limit"); allowed != 7 || limited != racers-1 {
		t.Fatalf("rcm_contact_decisions_total: %v allowed calls and %v blocked by the limit, want 7 and %d", allowed, limited, racers-1)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rcm_contact_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["channel"] == labels[0] && got["decision"] == labels[1] && got["reason"] == labels[2] {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no series %v", labels)
	return nil
}

// TestContactAttemptRules: the contract's order of checks (body, 404,
// rules) and what each rule answers, with the events recorded.
func TestContactAttemptRules(t *testing.T) {
	t.Parallel()
	c := newContactFixture(t)
	c.putBorrower(t, "doc_rules", "America/New_York", "")
	c.putDoc(t, "doc_bob_rules", bob.AccountID, "BEHIND", 1)
	sms := c.startWith(t, alice, "doc_rules", true, false, false).ID
	stopped := c.startWith(t, alice, "doc_rules", false, true, false).ID
	c.optOut(t, "doc_rules", stopped, campaign.All)
	c.changeConsent(t, "doc_rules", "all", events.ConsentGranted)
	bobs := c.startWith(t, bob, "doc_bob_rules", true, false, false).ID

	tests := []struct {
		name       string
		at         time.Time
		in         app.AttemptInput
		wantStatus int
		wantReason string
		wantNext   string // "" for null
	}{
		{"outbound without a campaign", tuesday10CT, app.AttemptInput{DocumentID: "doc_rules", Channel: "sms"}, 400, "", ""},
		{"a channel of no attempt", tuesday10CT, app.AttemptInput{DocumentID: "doc_rules", CampaignID: sms, Channel: "all"}, 400, "", ""},
		{"unknown direction", tuesday10CT, app.AttemptInput{DocumentID: "doc_rules", CampaignID: sms, Channel: "sms", Direction: "sideways"}, 400, "", ""},
		{"another account's campaign", tuesday10CT, app.AttemptInput{DocumentID: "doc_rules", CampaignID: bobs, Channel: "sms"}, 404, "", ""},
		{"another account's document", tuesday10CT, app.AttemptInput{DocumentID: "doc_bob_rules", CampaignID: bobs, Channel: "sms"}, 404, "", ""},
		{"allowed", tuesday10CT, app.AttemptInput{DocumentID: "doc_rules", CampaignID: sms, Channel: "sms", Notes: " first text "}, 201, "", ""},
		{"inactive campaign", tuesday10CT, app.AttemptInput{DocumentID: "doc_rules", CampaignID: stopped, Channel: "email"}, 409, "campaign_inactive", ""},
		{"not in the campaign", tuesday10CT, app.AttemptInput{DocumentID: "doc_rules", CampaignID: sms, Channel: "email"}, 409, "channel_not_in_campaign", ""},
		// 23:30 in New York: the next 08:00 there.
		{"outside contact hours", time.Date(2026, 5, 6, 3, 30, 0, 0, time.UTC), app.AttemptInput{DocumentID: "doc_rules", CampaignID: sms, Channel: "sms"}, 409, "outside_contact_hours", "2026-05-06T12:00:00.000Z"},
		{"inbound at night, without a campaign", time.Date(2026, 5, 6, 3, 30, 0, 0, time.UTC), app.AttemptInput{DocumentID: "doc_rules", Channel: "call", Direction: "inbound"}, 201, "", ""},
	}
	for _, tt := range tests {
		c.clock.set(tt.at)
		before := len(c.relay.Types())
		status, a := c.attempt(t, c.app, "", tt.in)
		handed := c.relay.Types()[before:]
		if status != tt.wantStatus {
			t.Fatalf("%s: got %d %v, want %d", tt.name, status, a, tt.wantStatus)
		}
		switch status {
		case 201:
			if len(handed) != 1 || handed[0] != events.TypeContactAttempted || a["decision"] != "allowed" || a["reason"] != nil || a["outcome"] != nil {
				t.Fatalf("%s: %v, events %v", tt.name, a, handed)
			}
		case 409:
			next, _ := a["nextAllowedAt"].(string)
			if a["error"] != "Contact not permitted." || a["reason"] != tt.wantReason || next != tt.wantNext || len(handed) != 1 || handed[0] != events.TypeContactBlocked {
				t.Fatalf("%s: got %v, events %v, want %s until %q", tt.name, a, handed, tt.wantReason, tt.wantNext)
			}
		default:
			if len(handed) != 0 {
				t.Fatalf("%s: recorded %v, want nothing", tt.name, handed)
			}
		}
	}
	// A revocation on the document blocks as opted_out; the loan rule
	// comes before it.
	c.clock.set(tuesday10CT)
	c.changeConsent(t, "doc_rules", "sms", events.ConsentRevoked)
	if status, a := c.attempt(t, c.app, "", app.AttemptInput{DocumentID: "doc_rules", CampaignID: sms, Channel: "sms"}); status != 409 || a["reason"] != "opted_out" || a["nextAllowedAt"] != nil {
		t.Fatalf("revoked: %d %v, want opted_out with no next time", status, a)
	}
	c.putDoc(t, "doc_rules", alice.AccountID, "CURRENT", 2)
	if status, a := c.attempt(t, c.app, "", app.AttemptInput{DocumentID: "doc_rules", CampaignID: stopped, Channel: "sms"}); status != 409 || a["reason"] != "campaign_inactive" {
		t.Fatalf("ended campaign: %d %v", status, a)
	}
	if e := c.lastEvent(t, events.TypeContactBlocked); e.AttemptID == "" || e.CampaignID != stopped {
		t.Fatalf("contact_blocked %+v", e)
	}
	if e := c.lastEvent(t, events.TypeContactAttempted); e.Direction != "inbound" || e.CampaignID != "" {
		t.Fatalf("contact_attempted of the inbound contact %+v", e)
	}
}

// TestOutcomes: an outcome is set once; the same again records nothing,
// another is 409; a blocked or unknown attempt is 404; an outcome of
// another channel is 400; a conversation starts the call cooldown.
func TestOutcomes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newContactFixture(t)
	c.putBorrower(t, "doc_out", "America/Chicago", "")
	id := c.startWith(t, alice, "doc_out", true, false, true).ID
	_, allowed := c.attempt(t, c.app, "", call("doc_out", id))
	_, blocked := c.attempt(t, c.app, "", app.AttemptInput{DocumentID: "doc_out", CampaignID: id, Channel: "email"})
	callID, blockedID := allowed["id"].(string), blocked["attemptId"].(string)
	outcome := func(attemptID, outcome string) (app.Answer, error) {
		return c.app.RecordOutcome(ctx, app.Request{Principal: alice}, app.OutcomeInput{DocumentID: "doc_out", AttemptID: attemptID, Outcome: outcome, Notes: " spoke "})
	}
	c.clock.add(time.Minute)
	ans, err := outcome(callID, "conversation")
	if err != nil || ans.Status != http.StatusOK {
		t.Fatalf("outcome: %d %s %v", ans.Status, ans.Body, err)
	}
	var got struct{ Attempt app.AttemptRecord }
	if err := json.Unmarshal(ans.Body, &got); err != nil || got.Attempt.Outcome == nil || *got.Attempt.Outcome != "conversation" ||
		*got.Attempt.OutcomeAt != events.FormatTime(c.clock.now()) || got.Attempt.OutcomeNotes != "spoke" {
		t.Fatalf("outcome answered %s", ans.Body)
	}
	events0 := apptest.Outbox(t, c.store, events.TypeContactOutcome)
	if again, err := outcome(callID, "conversation"); err != nil || again.Status != http.StatusOK || string(again.Body) != string(ans.Body) {
		t.Fatalf("the same again: %d %s %v, want the stored attempt", again.Status, again.Body, err)
	}
	if n := apptest.Outbox(t, c.store, events.TypeContactOutcome); n != events0 || n != 1 {
		t.Fatalf("contact_outcome events %d, want 1", n)
	}
	for _, tt := range []struct {
		name, attempt, outcome string
		want                   error
	}{
		{"another outcome", callID, "voicemail", httpx.ErrOutcomeRecorded},
		{"an outcome of another channel", callID, "delivered", httpx.ErrInvalidBody},
		{"an outcome no channel takes", callID, "maybe", httpx.ErrInvalidBody},
		{"a blocked attempt", blockedID, "delivered", httpx.ErrAttemptNotFound},
		{"an unknown attempt", ids.NewGenerator(time.Now).New(ids.AttemptPrefix), "delivered", httpx.ErrAttemptNotFound},
		{"not an attempt id", "att_nope", "delivered", httpx.ErrAttemptNotFound},
	} {
		if _, err := outcome(tt.attempt, tt.outcome); !errors.Is(err, tt.want) {
			t.Fatalf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	// The conversation holds calls off for the window; texts go on.
	c.clock.add(time.Hour)
	if status, a := c.attempt(t, c.app, "", call("doc_out", id)); status != 409 || a["reason"] != "conversation_cooldown" ||
		a["nextAllowedAt"] != events.FormatTime(tuesday10CT.Add(time.Minute+168*time.Hour)) {
		t.Fatalf("a call after the conversation: %d %v", status, a)
	}
	if status, a := c.attempt(t, c.app, "", app.AttemptInput{DocumentID: "doc_out", CampaignID: id, Channel: "sms"}); status != 201 {
		t.Fatalf("a text after the conversation: %d %v", status, a)
	}
}

// TestAttemptIdempotency: a retried attempt is answered from the first
// (allowed or blocked) and never uses up a limit twice.
func TestAttemptIdempotency(t *testing.T) {
	t.Parallel()
	c := newContactFixture(t)
	c.putBorrower(t, "doc_idem", "America/Chicago", "MA")
	id := c.startWith(t, alice, "doc_idem", true, false, true).ID
	for i := range 3 {
		if status, a := c.attempt(t, c.app, "k-first", call("doc_idem", id)); status != 201 || a["decision"] != "allowed" {
			t.Fatalf("try %d: %d %v", i, status, a)
		}
	}
	// MA allows two calls and texts together: one used, one left.
	if status, a := c.attempt(t, c.app, "k-second", app.AttemptInput{DocumentID: "doc_idem", CampaignID: id, Channel: "sms"}); status != 201 {
		t.Fatalf("the second contact: %d %v", status, a)
	}
	var blockedID any
	for i := range 2 {
		status, a := c.attempt(t, c.app, "k-third", call("doc_idem", id))
		if status != 409 || a["reason"] != "state_frequency_limit" || (i > 0 && a["attemptId"] != blockedID) {
			t.Fatalf("the third, try %d: %d %v", i, status, a)
		}
		blockedID = a["attemptId"]
	}
	page, err := c.app.Attempts(context.Background(), alice, "doc_idem", "", 10)
	if err != nil || len(page.Attempts) != 3 {
		t.Fatalf("listed %d attempts (%v), want 3", len(page.Attempts), err)
	}
}

// TestAttemptsAndClearance: the list pages newest first; a dry run
// records nothing, skips the campaign's rules without one, and checks
// its instant and its campaign.
func TestAttemptsAndClearance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newContactFixture(t)
	c.putBorrower(t, "doc_list", "", "")
	c.clock.set(time.Date(2026, 5, 5, 19, 0, 0, 0, time.UTC)) // in every US zone's hours
	id := c.startWith(t, alice, "doc_list", true, false, false).ID
	var made []string
	for range 5 {
		_, a := c.attempt(t, c.app, "", app.AttemptInput{DocumentID: "doc_list", CampaignID: id, Channel: "sms"})
		made = append([]string{a["id"].(string)}, made...)
		c.clock.add(time.Second)
	}
	var got []string
	cursor := ""
	for {
		page, err := c.app.Attempts(ctx, alice, "doc_list", cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page.Attempts {
			got = append(got, a.ID)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if len(got) != len(made) || got[0] != made[0] || got[4] != made[4] {
		t.Fatalf("paged %v, want %v", got, made)
	}
	if _, err := c.app.Attempts(ctx, bob, "doc_list", "", 2); !errors.Is(err, httpx.ErrNotFound) {
		t.Fatalf("another account's list: %v", err)
	}

	before := len(c.relay.Types())
	now := c.clock.now()
	for _, tt := range []struct {
		name       string
		in         app.ClearanceInput
		wantErr    error
		wantReason string
	}{
		{"allowed now", app.ClearanceInput{DocumentID: "doc_list", CampaignID: id, Channel: "sms"}, nil, ""},
		{"not in the campaign", app.ClearanceInput{DocumentID: "doc_list", CampaignID: id, Channel: "call"}, nil, "channel_not_in_campaign"},
		{"without the campaign", app.ClearanceInput{DocumentID: "doc_list", Channel: "call"}, nil, ""},
		{"at night everywhere", app.ClearanceInput{DocumentID: "doc_list", Channel: "call", At: now.Add(8 * time.Hour)}, nil, "outside_contact_hours"},
		{"too far back", app.ClearanceInput{DocumentID: "doc_list", Channel: "call", At: now.Add(-2 * time.Minute)}, httpx.ErrInvalidQuery, ""},
		{"too far ahead", app.ClearanceInput{DocumentID: "doc_list", Channel: "call", At: now.Add(367 * 24 * time.Hour)}, httpx.ErrInvalidQuery, ""},
		{"another document's campaign", app.ClearanceInput{DocumentID: "doc_list", CampaignID: "rcm_other", Channel: "call"}, httpx.ErrCampaignNotFound, ""},
		{"an unknown document", app.ClearanceInput{DocumentID: "doc_unknown", Channel: "call"}, httpx.ErrNotFound, ""},
	} {
		got, err := c.app.Clear(ctx, alice, tt.in)
		if !errors.Is(err, tt.wantErr) {
			t.Fatalf("%s: got %v, want %v", tt.name, err, tt.wantErr)
		}
		if err != nil {
			continue
		}
		reason := ""
		if got.Reason != nil {
			reason = *got.Reason
		}
		if got.Allowed != (tt.wantReason == "") || reason != tt.wantReason {
			t.Fatalf("%s: got %+v, want reason %q", tt.name, got, tt.wantReason)
		}
	}
	if handed := c.relay.Types()[before:]; len(handed) != 0 {
		t.Fatalf("dry runs recorded %v, want nothing", handed)
	}
}
