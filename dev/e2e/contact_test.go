package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/events"
)

// attemptRecord is a contact attempt as the API returns it.
type attemptRecord struct {
	ID            string  `json:"id"`
	DocumentID    string  `json:"documentId"`
	CampaignID    *string `json:"campaignId"`
	Channel       string  `json:"channel"`
	Direction     string  `json:"direction"`
	Decision      string  `json:"decision"`
	Reason        *string `json:"reason"`
	NextAllowedAt *string `json:"nextAllowedAt"`
	AttemptedAt   string  `json:"attemptedAt"`
	Notes         string  `json:"notes"`
	Outcome       *string `json:"outcome"`
	OutcomeAt     *string `json:"outcomeAt"`
}

// blockedAnswer is the body of a 409 Contact not permitted.
type blockedAnswer struct {
	Error   string `json:"error"`
	Details struct {
		Reason        string  `json:"reason"`
		NextAllowedAt *string `json:"nextAllowedAt"`
		AttemptID     string  `json:"attemptId"`
	} `json:"details"`
}

// putBorrowerDoc publishes a document with its borrower and waits until
// the campaign service has it.
func putBorrowerDoc(t *testing.T, id, account, status, timeZone, state string, version int64) {
	t.Helper()
	d := stack.Document{ID: id, AccountID: account, Version: version, Borrower: &stack.Borrower{TimeZone: timeZone, State: state}}
	if status != "" {
		d.Loan = &stack.Loan{Status: status}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := stk.PutDocuments(ctx, d); err != nil {
		t.Fatal(err)
	}
}

// zones are time zones of many offsets, from which a test picks one where
// the borrower's local time now is well inside or well outside the
// contact hours.
var zones = []string{"Pacific/Kiritimati", "Pacific/Auckland", "Asia/Tokyo", "Asia/Shanghai", "Asia/Kolkata", "Asia/Dubai",
	"Europe/Moscow", "Europe/Berlin", "Europe/London", "Atlantic/Azores", "America/Sao_Paulo", "America/New_York",
	"America/Chicago", "America/Denver", "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu", "Pacific/Pago_Pago"}

// zoneWhere returns a zone whose local hour now, and for the next hour,
// satisfies ok.
func zoneWhere(t *testing.T, ok func(hour int) bool) *time.Location {
	t.Helper()
	now := time.Now()
	for _, name := range zones {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		if ok(now.In(loc).Hour()) && ok(now.Add(time.Hour).In(loc).Hour()) {
			return loc
		}
	}
	t.Fatal("no zone fits")
	return nil
}

// inHours is a zone where the contact hours hold now and for an hour.
func inHours(t *testing.T) *time.Location {
	return zoneWhere(t, func(h int) bool { return h >= 9 && h < 20 })
}

func attempt(t *testing.T, tok, doc string, body map[string]any, hdr ...string) response {
	t.Helper()
	return call(t, "POST", "/v1/documents/"+doc+"/contact-attempts", tok, body, hdr...)
}

func allowed(t *testing.T, r response) attemptRecord {
	t.Helper()
	if r.Status != http.StatusCreated {
		t.Fatalf("attempt: got %d %s, want 201", r.Status, r.Body)
	}
	var a struct {
		Attempt attemptRecord `json:"attempt"`
	}
	if err := json.Unmarshal(r.Body, &a); err != nil {
		t.Fatal(err)
	}
	return a.Attempt
}

func blockedFor(t *testing.T, r response, reason string) blockedAnswer {
	t.Helper()
	var b blockedAnswer
	if err := json.Unmarshal(r.Body, &b); err != nil || r.Status != http.StatusConflict || b.Error != contract.MsgNotPermitted || b.Details.Reason != reason || b.Details.AttemptID == "" {
		t.Fatalf("got %d %s, want 409 %q for %s", r.Status, r.Body, contract.MsgNotPermitted, reason)
	}
	return b
}

func outbound(campaign, channel string) map[string]any {
	return map[string]any{"campaignId": campaign, "channel": channel}
}

func listAttempts(t *testing.T, tok, doc string) []attemptRecord {
	t.Helper()
	var out []attemptRecord
	path := "/v1/documents/" + doc + "/contact-attempts?limit=2"
	for i := 0; i < 100; i++ {
		r := call(t, "GET", path, tok, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		var page struct {
			Attempts   []attemptRecord `json:"attempts"`
			NextCursor *string         `json:"nextCursor"`
		}
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Attempts...)
		if page.NextCursor == nil || *page.NextCursor == "" {
			return out
		}
		path = "/v1/documents/" + doc + "/contact-attempts?limit=2&cursor=" + url.QueryEscape(*page.NextCursor)
	}
	t.Fatal("too many pages")
	return nil
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := events.ParseTime(s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// TestContactBlockedReasons: each rule that time cannot fix blocks with
// its reason and no nextAllowedAt, records the blocked attempt, and an
// inbound contact is never blocked.
func TestContactBlockedReasons(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	loc := inHours(t)
	doc := "doc_cblk_" + acct
	putBorrowerDoc(t, doc, acct, "BEHIND", loc.String(), "", 1)
	smsOnly := start(t, tok, doc, true, false, false)
	both := start(t, tok, doc, true, true, false)
	ended := start(t, tok, doc, false, true, false)
	call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": ended.ID, "channel": "all"})
	call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": both.ID, "channel": "email"})
	// The opt-outs revoked their channels on the document too; grant them
	// back, so that what blocks below is each campaign's own state.
	changeConsent(t, tok, doc, "all", events.ConsentGranted, "Borrower asked to be contacted again")

	ok := allowed(t, attempt(t, tok, doc, map[string]any{"campaignId": smsOnly.ID, "channel": "sms", "notes": "  first text  "}))
	if ok.Decision != events.DecisionAllowed || ok.Reason != nil || ok.NextAllowedAt != nil || ok.Direction != events.DirectionOutbound ||
		ok.CampaignID == nil || *ok.CampaignID != smsOnly.ID || ok.DocumentID != doc || ok.Notes != "first text" || ok.Outcome != nil || ok.OutcomeAt != nil {
		t.Fatalf("allowed attempt: got %+v", ok)
	}
	for _, tc := range []struct {
		name   string
		body   map[string]any
		reason string
	}{
		{"campaign opted out of all", outbound(ended.ID, "email"), events.ReasonCampaignInactive},
		{"campaign opted out of the channel", outbound(both.ID, "email"), events.ReasonOptedOut},
		{"channel not in campaign", outbound(smsOnly.ID, "call"), events.ReasonChannelNotInCampaign},
	} {
		b := blockedFor(t, attempt(t, tok, doc, tc.body), tc.reason)
		if b.Details.NextAllowedAt != nil {
			t.Errorf("%s: nextAllowedAt %v, want null", tc.name, *b.Details.NextAllowedAt)
		}
	}
	changeConsent(t, tok, doc, "sms", events.ConsentRevoked, "Borrower texted STOP")
	blockedFor(t, attempt(t, tok, doc, outbound(smsOnly.ID, "sms")), events.ReasonOptedOut)
	// Inbound: never blocked, with or without a campaign.
	in := allowed(t, attempt(t, tok, doc, map[string]any{"channel": "sms", "direction": "inbound"}))
	if in.Direction != events.DirectionInbound || in.CampaignID != nil || in.Reason != nil {
		t.Fatalf("inbound: got %+v", in)
	}
	allowed(t, attempt(t, tok, doc, map[string]any{"campaignId": ended.ID, "channel": "call", "direction": "inbound"}))

	// loan_not_behind: the loan left BEHIND (its campaigns ended), as a
	// clearance without a campaign says.
	cur := "doc_cblkcur_" + acct
	putBorrowerDoc(t, cur, acct, "CURRENT", loc.String(), "", 1)
	r := call(t, "GET", "/v1/documents/"+cur+"/contact-clearance?channel=call", tok, nil)
	var cl struct {
		Allowed       bool    `json:"allowed"`
		Reason        *string `json:"reason"`
		NextAllowedAt *string `json:"nextAllowedAt"`
	}
	if err := json.Unmarshal(r.Body, &cl); err != nil || r.Status != 200 || cl.Allowed || cl.Reason == nil || *cl.Reason != events.ReasonLoanNotBehind || cl.NextAllowedAt != nil {
		t.Fatalf("clearance on a CURRENT loan: %d %s", r.Status, r.Body)
	}
	putBorrowerDoc(t, doc, acct, "CURRENT", loc.String(), "", 2)
	blockedFor(t, attempt(t, tok, doc, outbound(smsOnly.ID, "email")), events.ReasonCampaignInactive)

	// Every attempt is listed, newest first, blocked ones too.
	list := listAttempts(t, tok, doc)
	if len(list) != 8 || list[len(list)-1].ID != ok.ID {
		t.Fatalf("got %d attempts, the oldest %+v; want 8, the oldest the first", len(list), list[len(list)-1])
	}
	for i := 1; i < len(list); i++ {
		if list[i-1].AttemptedAt < list[i].AttemptedAt {
			t.Fatalf("attempts not newest first: %s before %s", list[i-1].AttemptedAt, list[i].AttemptedAt)
		}
	}
	blocked := 0
	for _, a := range list {
		if a.Decision == events.DecisionBlocked {
			blocked++
		}
	}
	if blocked != 5 {
		t.Fatalf("got %d blocked attempts listed, want 5", blocked)
	}
}

// TestContactHours: a borrower whose local time is outside 08:00–21:00 is
// not contacted; nextAllowedAt is the next 08:00 there.
func TestContactHours(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	loc := zoneWhere(t, func(h int) bool { return h < 6 || h >= 22 })
	doc := "doc_chours_" + acct
	putBorrowerDoc(t, doc, acct, "BEHIND", loc.String(), "", 1)
	c := start(t, tok, doc, false, false, true)
	before := time.Now()
	b := blockedFor(t, attempt(t, tok, doc, outbound(c.ID, "call")), events.ReasonOutsideContactHours)
	local := before.In(loc)
	want := time.Date(local.Year(), local.Month(), local.Day(), 8, 0, 0, 0, loc)
	if !want.After(before) {
		want = time.Date(local.Year(), local.Month(), local.Day()+1, 8, 0, 0, 0, loc)
	}
	if b.Details.NextAllowedAt == nil || !parseTime(t, *b.Details.NextAllowedAt).Equal(want) {
		t.Fatalf("nextAllowedAt %v, want %s (08:00 in %s)", b.Details.NextAllowedAt, events.FormatTime(want), loc)
	}
	// Inbound is never blocked, outside the hours too.
	allowed(t, attempt(t, tok, doc, map[string]any{"campaignId": c.ID, "channel": "call", "direction": "inbound"}))
}

// TestCallLimits: 7 allowed calls in the window, then call_frequency_limit
// until the first leaves it; a conversation outcome starts the cooldown;
// an MA borrower gets 2 calls and texts together.
func TestCallLimits(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	loc := inHours(t)
	log := newEventLog(t)

	doc := "doc_climit_" + acct
	putBorrowerDoc(t, doc, acct, "BEHIND", loc.String(), "", 1)
	c := start(t, tok, doc, false, false, true)
	var calls []attemptRecord
	for i := 0; i < 7; i++ {
		calls = append(calls, allowed(t, attempt(t, tok, doc, outbound(c.ID, "call"))))
		// An inbound call does not count.
		allowed(t, attempt(t, tok, doc, map[string]any{"campaignId": c.ID, "channel": "call", "direction": "inbound"}))
	}
	b := blockedFor(t, attempt(t, tok, doc, outbound(c.ID, "call")), events.ReasonCallFrequencyLimit)
	first := parseTime(t, calls[0].AttemptedAt)
	if b.Details.NextAllowedAt == nil || parseTime(t, *b.Details.NextAllowedAt).Before(first.Add(168*time.Hour)) {
		t.Fatalf("nextAllowedAt %v, want at least %s", b.Details.NextAllowedAt, events.FormatTime(first.Add(168*time.Hour)))
	}
	// A blocked attempt does not count, and takes no outcome.
	call(t, "POST", "/v1/documents/"+doc+"/contact-attempts/"+b.Details.AttemptID+"/outcome", tok, map[string]any{"outcome": "failed"}).
		wantError(t, 404, contract.MsgAttemptNotFound)

	// Conversation cooldown, on a fresh document.
	cool := "doc_ccool_" + acct
	putBorrowerDoc(t, cool, acct, "BEHIND", loc.String(), "", 1)
	cc := start(t, tok, cool, true, false, true)
	a := allowed(t, attempt(t, tok, cool, outbound(cc.ID, "call")))
	outcomePath := "/v1/documents/" + cool + "/contact-attempts/" + a.ID + "/outcome"
	call(t, "POST", outcomePath, tok, map[string]any{"outcome": "delivered"}).wantError(t, 400, invalidBody)
	r := call(t, "POST", outcomePath, tok, map[string]any{"outcome": "conversation", "notes": " agreed "})
	var withOutcome struct {
		Attempt attemptRecord `json:"attempt"`
	}
	if err := json.Unmarshal(r.Body, &withOutcome); err != nil || r.Status != 200 || withOutcome.Attempt.Outcome == nil ||
		*withOutcome.Attempt.Outcome != contract.OutcomeConversation || withOutcome.Attempt.OutcomeAt == nil {
		t.Fatalf("outcome: %d %s", r.Status, r.Body)
	}
	same := call(t, "POST", outcomePath, tok, map[string]any{"outcome": "conversation"})
	if same.Status != 200 || string(same.Body) != string(r.Body) {
		t.Fatalf("the same outcome again: got %d %s, want 200 %s", same.Status, same.Body, r.Body)
	}
	call(t, "POST", outcomePath, tok, map[string]any{"outcome": "voicemail"}).wantError(t, 409, contract.MsgOutcomeRecorded)
	call(t, "POST", "/v1/documents/"+doc+"/contact-attempts/"+a.ID+"/outcome", tok, map[string]any{"outcome": "voicemail"}).
		wantError(t, 404, contract.MsgAttemptNotFound)
	b = blockedFor(t, attempt(t, tok, cool, outbound(cc.ID, "call")), events.ReasonConversationCooldown)
	outcomeAt := parseTime(t, *withOutcome.Attempt.OutcomeAt)
	if b.Details.NextAllowedAt == nil || parseTime(t, *b.Details.NextAllowedAt).Before(outcomeAt.Add(168*time.Hour)) {
		t.Fatalf("cooldown nextAllowedAt %v, want at least %s", b.Details.NextAllowedAt, events.FormatTime(outcomeAt.Add(168*time.Hour)))
	}
	allowed(t, attempt(t, tok, cool, outbound(cc.ID, "sms"))) // the cooldown is of calls

	// MA: two calls and texts together.
	ma := "doc_cma_" + acct
	putBorrowerDoc(t, ma, acct, "BEHIND", loc.String(), "MA", 1)
	mc := start(t, tok, ma, true, true, true)
	allowed(t, attempt(t, tok, ma, outbound(mc.ID, "call")))
	allowed(t, attempt(t, tok, ma, outbound(mc.ID, "sms")))
	blockedFor(t, attempt(t, tok, ma, outbound(mc.ID, "sms")), events.ReasonStateFrequencyLimit)
	allowed(t, attempt(t, tok, ma, outbound(mc.ID, "email")))

	// The events: valid against their schemas (the log validates each),
	// in the compliance log, summarised in the feed.
	evs := log.waitFor(t, acct, func(evs []events.Event) bool {
		n := 0
		for _, e := range evs {
			if e.EventType == events.TypeContactOutcome || e.EventType == events.TypeContactBlocked {
				n++
			}
		}
		return n >= 4
	})
	if !slices.Contains(types(evs), events.TypeContactAttempted) {
		t.Fatalf("got %v, want contact_attempted among them", types(evs))
	}
	for _, typ := range []string{events.TypeContactAttempted, events.TypeContactBlocked, events.TypeContactOutcome} {
		eventually(t, time.Minute, typ+" entries", func() bool { return len(logEntries(t, tok, "&eventType="+typ)) > 0 })
	}
	eventually(t, time.Minute, "contact summaries in the feed", func() bool {
		var summaries []string
		for _, it := range activity(t, tok) {
			summaries = append(summaries, it.Summary)
		}
		return slices.Contains(summaries, "Call placed") && slices.Contains(summaries, "Inbound call recorded") &&
			slices.Contains(summaries, "Call outcome: conversation") &&
			slices.ContainsFunc(summaries, func(s string) bool {
				return strings.HasPrefix(s, "Call blocked: 7 calls in the last 7 days; next allowed ")
			})
	})
}

// TestContactConcurrency: N simultaneous attempts that could each be the
// 7th call get exactly one 201; the rest 409.
func TestContactConcurrency(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_cconc_" + acct
	putBorrowerDoc(t, doc, acct, "BEHIND", inHours(t).String(), "", 1)
	c := start(t, tok, doc, false, false, true)
	for i := 0; i < 6; i++ {
		allowed(t, attempt(t, tok, doc, outbound(c.ID, "call")))
	}
	const n = 8
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { statuses[i] = attempt(t, tok, doc, outbound(c.ID, "call")).Status })
	}
	wg.Wait()
	created := 0
	for _, s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			t.Fatalf("got statuses %v, want only 201 and 409", statuses)
		}
	}
	if created != 1 {
		t.Fatalf("got %d of %d simultaneous 7th calls allowed (%v), want exactly 1", created, n, statuses)
	}
	figure(t, "%d simultaneous candidates for the 7th call: %d allowed", n, created)
}

// TestContactIdempotencyAndClearance: a retried attempt or outcome is
// replayed and uses up nothing twice; a clearance records nothing, and
// its errors.
func TestContactIdempotencyAndClearance(t *testing.T) {
	t.Parallel()
	acct, other := newAccount(t, "org"), newAccount(t, "org")
	tok, otherTok := token(t, acct), token(t, other)
	loc := inHours(t)
	doc := "doc_cidem_" + acct
	putBorrowerDoc(t, doc, acct, "BEHIND", loc.String(), "", 1)
	foreign := "doc_cidem_" + other
	putBorrowerDoc(t, foreign, other, "BEHIND", loc.String(), "", 1)
	c := start(t, tok, doc, true, false, true)
	fc := start(t, otherTok, foreign, true, false, true)

	first := attempt(t, tok, doc, outbound(c.ID, "call"), "Idempotency-Key", "attempt-1")
	again := attempt(t, tok, doc, outbound(c.ID, "call"), "Idempotency-Key", "attempt-1")
	if again.Status != 201 || string(again.Body) != string(first.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retried attempt: got %d %s, want the first answer %s", again.Status, again.Body, first.Body)
	}
	a := allowed(t, first)
	op := "/v1/documents/" + doc + "/contact-attempts/" + a.ID + "/outcome"
	o1 := call(t, "POST", op, tok, map[string]any{"outcome": "voicemail"}, "Idempotency-Key", "outcome-1")
	o2 := call(t, "POST", op, tok, map[string]any{"outcome": "voicemail"}, "Idempotency-Key", "outcome-1")
	if o1.Status != 200 || string(o2.Body) != string(o1.Body) || o2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retried outcome: %d %s then %d %s", o1.Status, o1.Body, o2.Status, o2.Body)
	}
	// Blocked attempts replay their 409 too.
	b1 := attempt(t, tok, doc, outbound(c.ID, "email"), "Idempotency-Key", "attempt-2")
	b2 := attempt(t, tok, doc, outbound(c.ID, "email"), "Idempotency-Key", "attempt-2")
	blockedFor(t, b1, events.ReasonChannelNotInCampaign)
	if string(b2.Body) != string(b1.Body) || b2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retried blocked attempt: %s then %s", b1.Body, b2.Body)
	}
	if got := len(listAttempts(t, tok, doc)); got != 2 {
		t.Fatalf("got %d attempts, want 2: a retry recorded one more", got)
	}

	// Clearance: a dry run.
	clear := "/v1/documents/" + doc + "/contact-clearance"
	r := call(t, "GET", clear+"?channel=call&campaignId="+c.ID, tok, nil)
	if m := r.JSON(t); r.Status != 200 || len(m) != 3 || m["allowed"] != true || m["reason"] != nil || m["nextAllowedAt"] != nil {
		t.Fatalf("clearance: got %d %s", r.Status, r.Body)
	}
	r = call(t, "GET", clear+"?channel=email&campaignId="+c.ID, tok, nil)
	if r.Status != 200 || r.JSON(t)["reason"] != events.ReasonChannelNotInCampaign {
		t.Fatalf("clearance of email: got %d %s", r.Status, r.Body)
	}
	soon := time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05.000Z")
	if r := call(t, "GET", clear+"?channel=sms&at="+soon, tok, nil); r.Status != 200 {
		t.Fatalf("clearance at %s: got %d %s", soon, r.Status, r.Body)
	}
	if got := len(listAttempts(t, tok, doc)); got != 2 {
		t.Fatalf("got %d attempts after clearances, want 2", got)
	}
	past := time.Now().Add(-2 * time.Minute).UTC().Format(time.RFC3339)
	far := time.Now().Add(367 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for _, q := range []string{"channel=fax", "", "channel=call&at=" + past, "channel=call&at=" + far, "channel=call&at=" + soon[:19] + "+00:00", "channel=call&at=" + soon[:19] + "%2B00:00",
		"channel=call&at=" + url.QueryEscape(time.Now().Format("2006-01-02T15:04:05-07:00"))} {
		call(t, "GET", clear+"?"+q, tok, nil).wantError(t, 400, contract.MsgInvalidQuery)
	}
	call(t, "GET", clear+"?channel=call&campaignId="+fc.ID, tok, nil).wantError(t, 404, campaignNotFound)
	call(t, "GET", "/v1/documents/"+foreign+"/contact-clearance?channel=call", tok, nil).wantError(t, 404, notFound)
	call(t, "GET", "/v1/documents/"+foreign+"/contact-attempts", tok, nil).wantError(t, 404, notFound)

	// Attempt check order: auth, body, 404, rules.
	call(t, "POST", "/v1/documents/"+doc+"/contact-attempts", "", outbound(c.ID, "call")).wantError(t, 401, missingToken)
	attempt(t, tok, foreign, map[string]any{"channel": "call"}).wantError(t, 400, invalidBody)
	attempt(t, tok, doc, outbound(fc.ID, "call")).wantError(t, 404, campaignNotFound)
	attempt(t, tok, foreign, outbound(fc.ID, "call")).wantError(t, 404, campaignNotFound)
	attempt(t, tok, foreign, map[string]any{"channel": "sms", "direction": "inbound"}).wantError(t, 404, campaignNotFound)
	// Outcome check order: auth, body, 404, 409.
	call(t, "POST", op, "", map[string]any{"outcome": "failed"}).wantError(t, 401, missingToken)
	call(t, "POST", "/v1/documents/"+foreign+"/contact-attempts/"+a.ID+"/outcome", tok, map[string]any{"outcome": "maybe"}).wantError(t, 400, invalidBody)
	call(t, "POST", "/v1/documents/"+doc+"/contact-attempts/att_00000000000000000000000000/outcome", tok, map[string]any{"outcome": "failed"}).
		wantError(t, 404, contract.MsgAttemptNotFound)
	call(t, "POST", op, otherTok, map[string]any{"outcome": "failed"}).wantError(t, 404, contract.MsgAttemptNotFound)
	call(t, "POST", op, tok, map[string]any{"outcome": "failed"}).wantError(t, 409, contract.MsgOutcomeRecorded)
}
