package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/events"
)

// consentState is the answer of GET …/consent.
type consentState struct {
	DocumentID string `json:"documentId"`
	Channels   map[string]struct {
		Status    string  `json:"status"`
		ChangedAt *string `json:"changedAt"`
		EventID   *string `json:"eventId"`
		Source    *string `json:"source"`
	} `json:"channels"`
	Version int64 `json:"version"`
}

func decodeConsent(t *testing.T, r response) consentState {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("consent: got %d %s, want 200", r.Status, r.Body)
	}
	var s consentState
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func getConsent(t *testing.T, tok, doc string) consentState {
	t.Helper()
	return decodeConsent(t, call(t, "GET", "/v1/documents/"+doc+"/consent", tok, nil))
}

func changeConsent(t *testing.T, tok, doc, channel, status, basis string, hdr ...string) response {
	t.Helper()
	return call(t, "POST", "/v1/documents/"+doc+"/consent", tok,
		map[string]any{"channel": channel, "status": status, "basis": basis}, hdr...)
}

// campaignRecord is what these tests read of a campaign.
type campaignRecord struct {
	ID                 string   `json:"id"`
	Active             bool     `json:"active"`
	ActiveChannels     []string `json:"activeChannels"`
	SuppressedChannels []struct {
		Channel   string `json:"channel"`
		RevokedAt string `json:"revokedAt"`
		EventID   string `json:"eventId"`
	} `json:"suppressedChannels"`
}

func (c campaignRecord) suppressed() []string {
	out := []string{}
	for _, s := range c.SuppressedChannels {
		out = append(out, s.Channel)
	}
	slices.Sort(out)
	return out
}

func (c campaignRecord) active() []string {
	out := slices.Clone(c.ActiveChannels)
	slices.Sort(out)
	return append([]string{}, out...)
}

// campaigns reads every campaign of doc, by the list and one by one, and
// checks the two agree.
func campaigns(t *testing.T, tok, doc string) map[string]campaignRecord {
	t.Helper()
	r := call(t, "GET", "/v1/documents/"+doc+"/rcm?limit=200", tok, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("list: %d %s", r.Status, r.Body)
	}
	var page struct {
		Campaigns []campaignRecord `json:"campaigns"`
	}
	if err := json.Unmarshal(r.Body, &page); err != nil {
		t.Fatal(err)
	}
	out := map[string]campaignRecord{}
	for _, c := range page.Campaigns {
		one := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+c.ID, tok, nil)
		var got struct {
			Campaign campaignRecord `json:"campaign"`
		}
		if err := json.Unmarshal(one.Body, &got); err != nil || one.Status != http.StatusOK {
			t.Fatalf("get %s: %d %s", c.ID, one.Status, one.Body)
		}
		if !slices.Equal(got.Campaign.active(), c.active()) || !slices.Equal(got.Campaign.suppressed(), c.suppressed()) {
			t.Fatalf("campaign %s: the list says %+v, the record %+v", c.ID, c, got.Campaign)
		}
		out[c.ID] = c
	}
	return out
}

func start(t *testing.T, tok, doc string, sms, email, call bool) campaignRecord {
	t.Helper()
	raw, _ := json.Marshal(startCampaign(t, tok, doc, map[string]any{"sms": sms, "email": email, "call": call, "tone": "t", "cadence": "c"}))
	var c campaignRecord
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConsentDefault: a document without any revocation on record has
// every channel granted, nothing changed, version 0; another account's
// document, or none, is not found.
func TestConsentDefault(t *testing.T) {
	t.Parallel()
	acct, other := newAccount(t, "org"), newAccount(t, "org")
	tok := token(t, acct)
	doc, foreign := "doc_cdef_"+acct, "doc_cdef_"+other
	putDoc(t, doc, acct, "BEHIND", 1)
	putDoc(t, foreign, other, "BEHIND", 1)
	s := getConsent(t, tok, doc)
	if s.DocumentID != doc || s.Version != 0 || len(s.Channels) != 3 {
		t.Fatalf("got %+v, want the default state of %s", s, doc)
	}
	for _, ch := range contract.Channels() {
		c := s.Channels[ch]
		if c.Status != events.ConsentGranted || c.ChangedAt != nil || c.EventID != nil || c.Source != nil {
			t.Fatalf("%s: got %+v, want granted and never changed", ch, c)
		}
	}
	call(t, "GET", "/v1/documents/"+foreign+"/consent", tok, nil).wantError(t, 404, notFound)
	call(t, "GET", "/v1/documents/doc_nowhere_"+acct+"/consent", tok, nil).wantError(t, 404, notFound)
	call(t, "GET", "/v1/documents/"+doc+"/consent", "", nil).wantError(t, 401, missingToken)
}

// TestOptOutFollowsTheDocument: an opt-out through one campaign revokes
// the channel on the document, and the very next reads of every campaign
// of it show it (read-your-writes); a start with every requested channel
// revoked is refused and records nothing; a re-grant brings the channel
// back where the campaign did not opt it out itself.
func TestOptOutFollowsTheDocument(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_cfollow_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	a := start(t, tok, doc, true, true, false)
	b := start(t, tok, doc, true, false, true)
	if len(a.SuppressedChannels) != 0 || a.SuppressedChannels == nil {
		t.Fatalf("a fresh campaign: suppressedChannels %#v, want present and empty", a.SuppressedChannels)
	}

	r := call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": a.ID, "channel": "sms", "notes": "Borrower texted STOP"})
	if r.Status != http.StatusOK {
		t.Fatalf("opt-out: %d %s", r.Status, r.Body)
	}
	s := getConsent(t, tok, doc)
	sms := s.Channels["sms"]
	if s.Version != 1 || sms.Status != events.ConsentRevoked || sms.Source == nil || *sms.Source != "opt_out" || sms.ChangedAt == nil || sms.EventID == nil {
		t.Fatalf("after the opt-out: got %+v, want sms revoked by opt_out, version 1", s)
	}
	got := campaigns(t, tok, doc)
	if c := got[a.ID]; !c.Active || !slices.Equal(c.active(), []string{"email"}) || !slices.Equal(c.suppressed(), []string{"sms"}) {
		t.Fatalf("the opted-out campaign: got %+v, want active [email], suppressed [sms]", c)
	}
	c := got[b.ID]
	if !c.Active || !slices.Equal(c.active(), []string{"call"}) || !slices.Equal(c.suppressed(), []string{"sms"}) {
		t.Fatalf("the other campaign: got %+v, want active [call], suppressed [sms]", c)
	}
	if sup := c.SuppressedChannels[0]; sup.EventID != *sms.EventID || sup.RevokedAt != *sms.ChangedAt {
		t.Fatalf("suppressed %+v, want the revocation %s at %s", sup, *sms.EventID, *sms.ChangedAt)
	}

	// A new campaign with sms is started without it; one with only sms is
	// refused, and nothing is recorded.
	if c := start(t, tok, doc, true, true, false); !slices.Equal(c.active(), []string{"email"}) || !slices.Equal(c.suppressed(), []string{"sms"}) {
		t.Fatalf("a start with sms and email: got %+v, want active [email], suppressed [sms]", c)
	}
	call(t, "POST", "/v1/documents/"+doc+"/rcm", tok, map[string]any{"sms": true, "email": false, "call": false, "tone": "t", "cadence": "c"}).
		wantError(t, http.StatusConflict, contract.MsgAllOptedOut)
	// The seed's rules come first: a body fault is still 400.
	call(t, "POST", "/v1/documents/"+doc+"/rcm", tok, map[string]any{"sms": true, "email": false, "call": false, "tone": "", "cadence": "c"}).
		wantError(t, 400, invalidBody)
	if n := len(campaigns(t, tok, doc)); n != 3 {
		t.Fatalf("got %d campaigns, want 3: the refused start recorded one", n)
	}

	// All channels revoked through the consent route: b stays active (a
	// document-level revocation never deactivates a campaign) with no
	// active channel.
	changeConsent(t, tok, doc, "all", events.ConsentRevoked, "Cease and desist letter")
	if c := campaigns(t, tok, doc)[b.ID]; !c.Active || len(c.ActiveChannels) != 0 || !slices.Equal(c.suppressed(), []string{"call", "sms"}) {
		t.Fatalf("all revoked: got %+v, want active with no channel, sms and call suppressed", c)
	}
	call(t, "POST", "/v1/documents/"+doc+"/rcm", tok, map[string]any{"sms": true, "email": true, "call": true, "tone": "t", "cadence": "c"}).
		wantError(t, http.StatusConflict, contract.MsgAllOptedOut)

	// Granting all back: b has both again; a keeps its own opt-out of sms.
	changeConsent(t, tok, doc, "all", events.ConsentGranted, "Borrower texted START")
	got = campaigns(t, tok, doc)
	if c := got[b.ID]; !slices.Equal(c.active(), []string{"call", "sms"}) || len(c.SuppressedChannels) != 0 {
		t.Fatalf("after the grant: got %+v, want active [call sms], none suppressed", c)
	}
	if c := got[a.ID]; !slices.Equal(c.active(), []string{"email"}) || len(c.SuppressedChannels) != 0 {
		t.Fatalf("after the grant, the campaign that opted out of sms: got %+v, want active [email], none suppressed", c)
	}
	if s := getConsent(t, tok, doc); s.Version != 3 {
		t.Fatalf("got version %d, want 3 (opt-out, revoke all, grant all)", s.Version)
	}
}

// TestConsentChanges: every accepted change is recorded and counted, a
// repeat too; a channel's changedAt, eventId and source move only with
// its status; the route's check order; Idempotency-Key replays; the
// events validate and reach the compliance log and the feed.
func TestConsentChanges(t *testing.T) {
	t.Parallel()
	acct, other := newAccount(t, "org"), newAccount(t, "org")
	tok := token(t, acct)
	doc, foreign := "doc_cchg_"+acct, "doc_cchg_"+other
	putDoc(t, doc, acct, "BEHIND", 1)
	putDoc(t, foreign, other, "BEHIND", 1)
	log := newEventLog(t)

	first := decodeConsent(t, changeConsent(t, tok, doc, "call", events.ConsentRevoked, "  Borrower called to revoke  "))
	call1 := first.Channels["call"]
	if first.Version != 1 || call1.Status != events.ConsentRevoked || call1.Source == nil || *call1.Source != "consent" || call1.ChangedAt == nil || call1.EventID == nil {
		t.Fatalf("revoke: got %+v", first)
	}
	if first.Channels["sms"].Status != events.ConsentGranted || first.Channels["sms"].ChangedAt != nil {
		t.Fatalf("revoke of call changed sms: %+v", first.Channels["sms"])
	}
	repeat := decodeConsent(t, changeConsent(t, tok, doc, "call", events.ConsentRevoked, "Second letter"))
	if c := repeat.Channels["call"]; repeat.Version != 2 || *c.ChangedAt != *call1.ChangedAt || *c.EventID != *call1.EventID {
		t.Fatalf("repeat: got version %d, call %+v; want version 2 and call unchanged (%s, %s)", repeat.Version, c, *call1.ChangedAt, *call1.EventID)
	}
	granted := decodeConsent(t, changeConsent(t, tok, doc, "call", events.ConsentGranted, "Borrower asked to be called"))
	if c := granted.Channels["call"]; granted.Version != 3 || c.Status != events.ConsentGranted || c.ChangedAt == nil || *c.ChangedAt < *call1.ChangedAt || *c.EventID == *call1.EventID {
		t.Fatalf("grant: got version %d, call %+v; want version 3 and call changed", granted.Version, c)
	}
	if got := getConsent(t, tok, doc); got.Version != 3 || got.Channels["call"].Status != events.ConsentGranted {
		t.Fatalf("read after the grant: %+v", got)
	}

	// Idempotency-Key: the first answer replayed, nothing recorded twice.
	once := changeConsent(t, tok, doc, "sms", events.ConsentRevoked, "Borrower texted STOP", "Idempotency-Key", "consent-1")
	again := changeConsent(t, tok, doc, "sms", events.ConsentRevoked, "Borrower texted STOP", "Idempotency-Key", "consent-1")
	if again.Status != http.StatusOK || string(again.Body) != string(once.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: got %d %s (replayed %q), want the first answer %s", again.Status, again.Body, again.Header.Get("Idempotent-Replayed"), once.Body)
	}
	if got := getConsent(t, tok, doc); got.Version != 4 {
		t.Fatalf("after a retried change: version %d, want 4", got.Version)
	}
	changeConsent(t, tok, doc, "email", events.ConsentRevoked, "x", "Idempotency-Key", "consent-1").
		wantError(t, http.StatusUnprocessableEntity, contract.MsgKeyReused)

	// Check order: auth, body, ownership.
	path, foreignPath := "/v1/documents/"+doc+"/consent", "/v1/documents/"+foreign+"/consent"
	valid := map[string]any{"channel": "sms", "status": "granted", "basis": "b"}
	for _, tc := range []struct {
		name, path, tok string
		body            any
		status          int
		message         string
	}{
		{"no token", foreignPath, "", map[string]any{}, 401, missingToken},
		{"bad body on a foreign document", foreignPath, tok, map[string]any{"channel": "sms"}, 400, invalidBody},
		{"foreign document", foreignPath, tok, valid, 404, notFound},
		{"no such document", "/v1/documents/doc_nowhere_" + acct + "/consent", tok, valid, 404, notFound},
		{"channel fax", path, tok, map[string]any{"channel": "fax", "status": "granted", "basis": "b"}, 400, invalidBody},
		{"status unknown", path, tok, map[string]any{"channel": "sms", "status": "maybe", "basis": "b"}, 400, invalidBody},
		{"basis missing", path, tok, map[string]any{"channel": "sms", "status": "granted"}, 400, invalidBody},
		{"basis blank", path, tok, map[string]any{"channel": "sms", "status": "granted", "basis": "  "}, 400, invalidBody},
		{"basis 201", path, tok, map[string]any{"channel": "sms", "status": "granted", "basis": strings.Repeat("b", 201)}, 400, invalidBody},
		{"notes 2001", path, tok, map[string]any{"channel": "sms", "status": "granted", "basis": "b", "notes": strings.Repeat("n", 2001)}, 400, invalidBody},
	} {
		call(t, "POST", tc.path, tc.tok, tc.body).wantError(t, tc.status, tc.message)
	}
	if got := getConsent(t, tok, doc); got.Version != 4 {
		t.Fatalf("after refused changes: version %d, want 4", got.Version)
	}

	// Four changes, four events, each valid against its schema (the log
	// decodes and validates every record), with the state after it.
	evs := log.waitFor(t, acct, func(evs []events.Event) bool { return len(evs) >= 4 })
	versions := []int64{}
	for _, e := range evs {
		if e.EventType != events.TypeConsentChanged || e.CampaignID != "" || e.Consent == nil || e.DocumentID != doc {
			t.Fatalf("got event %+v, want consent_changed of %s without a campaign", e, doc)
		}
		versions = append(versions, e.Consent.Version)
	}
	if !slices.Equal(versions, []int64{1, 2, 3, 4}) || evs[0].Basis != "Borrower called to revoke" {
		t.Fatalf("got versions %v, first basis %q", versions, evs[0].Basis)
	}
	var entries int
	eventually(t, time.Minute, "4 consent_changed entries", func() bool {
		entries = len(logEntries(t, tok, "&eventType=consent_changed"))
		return entries >= 4
	})
	if entries != 4 {
		t.Fatalf("got %d consent_changed entries, want 4", entries)
	}
	eventually(t, time.Minute, "the consent summaries in the feed", func() bool {
		var summaries []string
		for _, it := range activity(t, tok) {
			summaries = append(summaries, it.Summary)
		}
		return slices.Contains(summaries, "Call consent revoked: Borrower called to revoke") &&
			slices.Contains(summaries, "Call consent granted: Borrower asked to be called") &&
			slices.Contains(summaries, "SMS consent revoked: Borrower texted STOP")
	})
}
