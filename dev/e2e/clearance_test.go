package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// clearance is the answer of GET …/contact-clearance.
type clearance struct {
	Allowed       bool    `json:"allowed"`
	Reason        *string `json:"reason"`
	NextAllowedAt *string `json:"nextAllowedAt"`
}

// clearAt asks whether a call to doc is allowed at the instant at, without
// a campaign (the document's rules only).
func clearAt(t *testing.T, tok, doc string, at time.Time) clearance {
	t.Helper()
	path := "/v1/documents/" + doc + "/contact-clearance?channel=call&at=" + url.QueryEscape(events.FormatTime(at))
	r := call(t, "GET", path, tok, nil)
	var c clearance
	if err := json.Unmarshal(r.Body, &c); err != nil || r.Status != 200 {
		t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
	}
	return c
}

// wantClearance checks a clearance at at: allowed, or blocked for reason
// with nextAllowedAt next.
func wantClearance(t *testing.T, tok, doc string, at time.Time, reason string, next time.Time) {
	t.Helper()
	c := clearAt(t, tok, doc, at)
	if reason == "" {
		if !c.Allowed || c.Reason != nil || c.NextAllowedAt != nil {
			t.Errorf("%s at %s: got %+v, want allowed", doc, events.FormatTime(at), c)
		}
		return
	}
	if c.Allowed || c.Reason == nil || *c.Reason != reason || c.NextAllowedAt == nil || *c.NextAllowedAt != events.FormatTime(next) {
		got := "null"
		if c.NextAllowedAt != nil {
			got = *c.NextAllowedAt
		}
		t.Errorf("%s at %s: got allowed=%v reason=%v next=%s, want %s until %s",
			doc, events.FormatTime(at), c.Allowed, c.Reason, got, reason, events.FormatTime(next))
	}
}

// nextDSTEnd is the first instant after from at which loc's clocks go back.
func nextDSTEnd(t *testing.T, loc *time.Location, from time.Time) time.Time {
	t.Helper()
	for h := from.Truncate(time.Hour); h.Before(from.AddDate(1, 0, 0)); h = h.Add(time.Hour) {
		_, before := h.In(loc).Zone()
		_, after := h.Add(time.Hour).In(loc).Zone()
		if after < before {
			return h.Add(time.Hour)
		}
	}
	t.Fatalf("no daylight-saving end in %s within a year", loc)
	return time.Time{}
}

// TestClearanceContactHours: the contact hours' edges through the gateway,
// with the clearance's `at`: 08:00 local is in, 21:00 is out and the next
// 08:00 is the answer, across a daylight-saving change too; a borrower
// without a time zone, or with a name not in the database, is held to
// [18:00Z, 01:00Z).
func TestClearanceContactHours(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	doc := "doc_hours_ny_" + acct
	putBorrowerDoc(t, doc, acct, "BEHIND", ny.String(), "", 1)
	const ms = time.Millisecond
	const reason = events.ReasonOutsideContactHours

	// A day well ahead, of one offset all day.
	day := time.Now().In(ny).AddDate(0, 0, 3)
	eight := time.Date(day.Year(), day.Month(), day.Day(), 8, 0, 0, 0, ny)
	nine := time.Date(day.Year(), day.Month(), day.Day(), 21, 0, 0, 0, ny)
	nextEight := time.Date(day.Year(), day.Month(), day.Day()+1, 8, 0, 0, 0, ny)
	wantClearance(t, tok, doc, eight.Add(-ms), reason, eight)
	wantClearance(t, tok, doc, eight, "", time.Time{})
	wantClearance(t, tok, doc, nine.Add(-ms), "", time.Time{})
	wantClearance(t, tok, doc, nine, reason, nextEight)

	// The night the clocks go back: 22:00 EDT the evening before, and the
	// answer is 08:00 EST, the same wall-clock time an hour later in UTC.
	end := nextDSTEnd(t, ny, time.Now().Add(48*time.Hour))
	eve := end.In(ny).Add(-4 * time.Hour) // 22:00 EDT of the day before
	if eve.Hour() != 22 {
		t.Fatalf("expected 22:00 local four hours before the change, got %s", eve)
	}
	morning := time.Date(end.In(ny).Year(), end.In(ny).Month(), end.In(ny).Day(), 8, 0, 0, 0, ny)
	if got := morning.Sub(eve); got != 11*time.Hour {
		t.Fatalf("22:00 EDT to 08:00 EST is %s, want 11h", got)
	}
	wantClearance(t, tok, doc, eve, reason, morning)

	// No zone, and a zone that does not exist: every US zone at once.
	for _, tz := range []string{"", "Mars/Olympus_Mons"} {
		d := "doc_hours_fallback_" + map[string]string{"": "none", "Mars/Olympus_Mons": "unknown"}[tz] + "_" + acct
		putBorrowerDoc(t, d, acct, "BEHIND", tz, "", 1)
		day := time.Now().UTC().AddDate(0, 0, 3)
		open := time.Date(day.Year(), day.Month(), day.Day(), 18, 0, 0, 0, time.UTC)
		shut := open.Add(7 * time.Hour) // 01:00Z the next day
		wantClearance(t, tok, d, open.Add(-ms), reason, open)
		wantClearance(t, tok, d, open, "", time.Time{})
		wantClearance(t, tok, d, shut.Add(-ms), "", time.Time{})
		wantClearance(t, tok, d, shut, reason, open.AddDate(0, 0, 1))
	}
}

// TestClearanceWindowBoundary: the rolling 168-hour window holds what
// happened at s with t − 168 h < s ≤ t. Seven calls block an eighth until
// the first one's attemptedAt + 168 h exactly, which is what the blocked
// attempt answers; a conversation's cooldown ends at its outcomeAt + 168 h.
func TestClearanceWindowBoundary(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	loc := inHours(t)
	doc := "doc_window_" + acct
	putBorrowerDoc(t, doc, acct, "BEHIND", loc.String(), "", 1)
	c := start(t, tok, doc, false, false, true)
	var first time.Time
	for i := 0; i < 7; i++ {
		a := allowed(t, attempt(t, tok, doc, outbound(c.ID, "call")))
		if i == 0 {
			first = parseTime(t, a.AttemptedAt)
		}
	}
	leaves := first.Add(168 * time.Hour)
	b := blockedFor(t, attempt(t, tok, doc, outbound(c.ID, "call")), events.ReasonCallFrequencyLimit)
	if b.Details.NextAllowedAt == nil || *b.Details.NextAllowedAt != events.FormatTime(leaves) {
		t.Fatalf("the eighth call: nextAllowedAt %v, want %s", b.Details.NextAllowedAt, events.FormatTime(leaves))
	}
	wantClearance(t, tok, doc, leaves.Add(-time.Millisecond), events.ReasonCallFrequencyLimit, leaves)
	wantClearance(t, tok, doc, leaves, "", time.Time{})

	cool := "doc_window_cool_" + acct
	putBorrowerDoc(t, cool, acct, "BEHIND", loc.String(), "", 1)
	cc := start(t, tok, cool, false, false, true)
	a := allowed(t, attempt(t, tok, cool, outbound(cc.ID, "call")))
	r := call(t, "POST", "/v1/documents/"+cool+"/contact-attempts/"+a.ID+"/outcome", tok, map[string]any{"outcome": "conversation"})
	var got struct {
		Attempt attemptRecord `json:"attempt"`
	}
	if err := json.Unmarshal(r.Body, &got); err != nil || r.Status != 200 || got.Attempt.OutcomeAt == nil {
		t.Fatalf("outcome: %d %s", r.Status, r.Body)
	}
	over := parseTime(t, *got.Attempt.OutcomeAt).Add(168 * time.Hour)
	wantClearance(t, tok, cool, over.Add(-time.Millisecond), events.ReasonConversationCooldown, over)
	wantClearance(t, tok, cool, over, "", time.Time{})
}

// consentValue is a record of rcm.consent.v1.
type consentValue struct {
	AccountID  string          `json:"accountId"`
	DocumentID string          `json:"documentId"`
	Channels   json.RawMessage `json:"channels"`
	Version    int64           `json:"version"`
}

// TestConsentTopicMatchesTheAPI: a sender that materialises rcm.consent.v1
// from the beginning, keeping the highest version per key, holds exactly
// the consent state the API answers for every document changed.
func TestConsentTopicMatchesTheAPI(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	loc := inHours(t)
	docs := []string{"doc_topic_a_" + acct, "doc_topic_b_" + acct, "doc_topic_c_" + acct}
	for _, d := range docs {
		putBorrowerDoc(t, d, acct, "BEHIND", loc.String(), "", 1)
	}
	a := start(t, tok, docs[0], true, true, true)
	call(t, "POST", "/v1/documents/"+docs[0]+"/rcm/opt-out", tok, map[string]any{"campaignId": a.ID, "channel": "sms"})
	changeConsent(t, tok, docs[0], "call", "revoked", "Borrower called to revoke")
	changeConsent(t, tok, docs[0], "sms", "granted", "Borrower texted START")
	changeConsent(t, tok, docs[1], "all", "revoked", "Letter received")
	changeConsent(t, tok, docs[1], "all", "revoked", "A second letter") // a repeat is a version too
	b := start(t, tok, docs[2], true, false, false)
	call(t, "POST", "/v1/documents/"+docs[2]+"/rcm/opt-out", tok, map[string]any{"campaignId": b.ID, "channel": "all"})

	want := map[string]consentValue{}
	for _, d := range docs {
		s := call(t, "GET", "/v1/documents/"+d+"/consent", tok, nil)
		var v struct {
			Channels json.RawMessage `json:"channels"`
			Version  int64           `json:"version"`
		}
		if err := json.Unmarshal(s.Body, &v); err != nil || s.Status != 200 {
			t.Fatalf("consent of %s: %d %s", d, s.Status, s.Body)
		}
		want[acct+"/"+d] = consentValue{AccountID: acct, DocumentID: d, Channels: v.Channels, Version: v.Version}
	}

	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{stk.KafkaAddr()}}, "e2e-consent-reader", prometheus.NewRegistry(),
		slog.New(slog.DiscardHandler), kgo.ConsumeTopics(events.ConsentTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := map[string]consentValue{}
	same := func() bool {
		if len(got) != len(want) {
			return false
		}
		for k, w := range want {
			g := got[k]
			if g.Version != w.Version || g.AccountID != w.AccountID || g.DocumentID != w.DocumentID || !sameJSON(g.Channels, w.Channels) {
				return false
			}
		}
		return true
	}
	for !same() {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("the materialised topic has %+v, want %+v", got, want)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if _, ours := want[string(r.Key)]; !ours {
				return
			}
			var v consentValue
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Errorf("record %s: %v", r.Key, err)
				return
			}
			if v.Version > got[string(r.Key)].Version {
				got[string(r.Key)] = v
			}
		})
	}
}

// sameJSON says whether two JSON texts hold the same value.
func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
