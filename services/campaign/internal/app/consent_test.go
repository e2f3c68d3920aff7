package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/app/apptest"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
)

func (f *fixture) startWith(t *testing.T, p principal.Principal, documentID string, sms, email, call bool) events.CampaignRecord {
	t.Helper()
	in := app.StartInput{DocumentID: documentID, StartInput: campaign.StartInput{SMS: sms, Email: email, Call: call, Tone: "kind", Cadence: "weekly"}}
	ans, err := f.app.Start(context.Background(), app.Request{Principal: p}, in)
	if err != nil || ans.Status != http.StatusCreated {
		t.Fatalf("start on %s: %d %s %v", documentID, ans.Status, ans.Body, err)
	}
	return startedCampaign(t, ans)
}

func (f *fixture) optOut(t *testing.T, documentID, campaignID string, ch campaign.Channel) {
	t.Helper()
	ans, err := f.app.OptOut(context.Background(), app.Request{Principal: alice}, app.OptOutInput{DocumentID: documentID, CampaignID: campaignID, Channel: ch})
	if err != nil || ans.Status != http.StatusOK {
		t.Fatalf("opt-out of %s: %d %s %v", ch, ans.Status, ans.Body, err)
	}
}

func (f *fixture) changeConsent(t *testing.T, documentID, channel, status string) app.ConsentState {
	t.Helper()
	ans, err := f.app.ChangeConsent(context.Background(), app.Request{Principal: alice},
		app.ConsentInput{DocumentID: documentID, Channel: channel, Status: status, Basis: " Borrower texted START "})
	if err != nil || ans.Status != http.StatusOK {
		t.Fatalf("consent %s %s: %d %s %v", channel, status, ans.Status, ans.Body, err)
	}
	var st app.ConsentState
	if err := json.Unmarshal(ans.Body, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (f *fixture) campaign(t *testing.T, documentID, id string) events.CampaignRecord {
	t.Helper()
	c, err := f.app.Campaign(context.Background(), alice, documentID, id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Record()
}

func (f *fixture) consent(t *testing.T, documentID string) app.ConsentState {
	t.Helper()
	st, err := f.app.Consent(context.Background(), alice, documentID)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestOptOutFollowsTheDocument: an opt-out on one campaign revokes the
// channel on the document; every campaign of the document reflects it at
// once (active channels, suppressed channels) without being deactivated,
// and the opt_out event carries the consent after it.
func TestOptOutFollowsTheDocument(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.putDoc(t, "doc_f", alice.AccountID, "BEHIND", 1)
	a := f.startWith(t, alice, "doc_f", true, true, false)
	b := f.startWith(t, alice, "doc_f", true, false, true)

	f.optOut(t, "doc_f", a.ID, campaign.SMS)
	st := f.consent(t, "doc_f")
	sms := st.Channels.SMS
	if sms.Status != events.ConsentRevoked || sms.Source != events.SourceOptOut || sms.EventID == "" || st.Version != 1 {
		t.Fatalf("consent after the opt-out: %+v, want sms revoked by opt_out at version 1", st)
	}
	if st.Channels.Email.Status != events.ConsentGranted || st.Channels.Email.ChangedAt != "" {
		t.Fatalf("email: %+v, want granted and never changed", st.Channels.Email)
	}
	gotA, gotB := f.campaign(t, "doc_f", a.ID), f.campaign(t, "doc_f", b.ID)
	if !gotA.Active || !slices.Equal(gotA.ActiveChannels, []string{"email"}) {
		t.Fatalf("the opted-out campaign: active %v channels %v, want active [email]", gotA.Active, gotA.ActiveChannels)
	}
	if !gotB.Active || !slices.Equal(gotB.ActiveChannels, []string{"call"}) {
		t.Fatalf("the other campaign: active %v channels %v, want active [call]", gotB.Active, gotB.ActiveChannels)
	}
	want := []events.SuppressedChannel{{Channel: "sms", RevokedAt: sms.ChangedAt, EventID: sms.EventID}}
	if !slices.Equal(gotB.Suppressed, want) || !slices.Equal(gotA.Suppressed, want) {
		t.Fatalf("suppressed: %v and %v, want %v on both", gotA.Suppressed, gotB.Suppressed, want)
	}
	if len(gotB.OptOuts) != 0 {
		t.Fatalf("the other campaign has opt-outs %v, want none of its own", gotB.OptOuts)
	}
	// The event carries the consent after it.
	ev := f.lastEvent(t, events.TypeOptOut)
	if ev.Consent == nil || ev.Consent.Version != 1 || ev.Consent.Channels.SMS.EventID != ev.EventID {
		t.Fatalf("opt_out event consent %+v, want version 1 with sms revoked by the event itself", ev.Consent)
	}

	// all revokes every channel; b is not deactivated by it.
	f.optOut(t, "doc_f", a.ID, campaign.All)
	st = f.consent(t, "doc_f")
	if st.Version != 2 || st.Channels.SMS.EventID != sms.EventID || st.Channels.Email.Status != events.ConsentRevoked || st.Channels.Call.Status != events.ConsentRevoked {
		t.Fatalf("after all: %+v, want version 2, sms unchanged, email and call revoked", st)
	}
	gotA, gotB = f.campaign(t, "doc_f", a.ID), f.campaign(t, "doc_f", b.ID)
	if gotA.Active || len(gotA.ActiveChannels) != 0 {
		t.Fatalf("after all: %+v, want inactive", gotA)
	}
	if !gotB.Active || len(gotB.ActiveChannels) != 0 || len(gotB.Suppressed) != 2 {
		t.Fatalf("the other campaign after all: active %v channels %v suppressed %v, want active, none, two suppressed", gotB.Active, gotB.ActiveChannels, gotB.Suppressed)
	}
	// Lists read the same.
	page, err := f.app.List(context.Background(), alice, "doc_f", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range page.Campaigns {
		if r := c.Record(); len(r.ActiveChannels) != 0 || len(r.Suppressed) == 0 {
			t.Fatalf("listed %s: channels %v suppressed %v, want none active", r.ID, r.ActiveChannels, r.Suppressed)
		}
	}
}

func (f *fixture) lastEvent(t *testing.T, typ string) events.Event {
	t.Helper()
	pending, err := f.store.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := len(pending) - 1; i >= 0; i-- {
		if pending[i].Type != typ {
			continue
		}
		if err := events.ValidateData(pending[i].Data); err != nil {
			t.Fatalf("%s event: %v", typ, err)
		}
		var e events.Event
		if err := json.Unmarshal(pending[i].Data, &e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	t.Fatalf("no %s event in the outbox", typ)
	return events.Event{}
}

// TestStartOnRevokedChannels: a start with some requested channels revoked
// succeeds without them; with every one revoked it answers 409 and
// records nothing, after the seed's checks.
func TestStartOnRevokedChannels(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.putDoc(t, "doc_r", alice.AccountID, "BEHIND", 1)
	f.putDoc(t, "doc_r_current", alice.AccountID, "CURRENT", 1)
	f.changeConsent(t, "doc_r", "sms", events.ConsentRevoked)
	f.changeConsent(t, "doc_r", "call", events.ConsentRevoked)

	some := f.startWith(t, alice, "doc_r", true, true, false)
	if !slices.Equal(some.ActiveChannels, []string{"email"}) || len(some.Suppressed) != 1 || some.Suppressed[0].Channel != "sms" {
		t.Fatalf("start with sms revoked: channels %v suppressed %v, want [email] and sms", some.ActiveChannels, some.Suppressed)
	}
	started := apptest.Outbox(t, f.store, events.TypeCampaignStarted)
	if e := f.lastEvent(t, events.TypeCampaignStarted); len(e.Campaign.Suppressed) != 1 {
		t.Fatalf("campaign_started carries %v suppressed, want sms", e.Campaign.Suppressed)
	}

	tests := []struct {
		name       string
		documentID string
		sms, call  bool
		want       error
	}{
		{"every requested channel revoked", "doc_r", true, true, httpx.ErrAllOptedOut},
		{"the loan rule first", "doc_r_current", true, true, httpx.ErrLoanRule},
		{"no channel first", "doc_r", false, false, httpx.ErrNoChannel},
	}
	for _, tt := range tests {
		in := app.StartInput{DocumentID: tt.documentID, StartInput: campaign.StartInput{SMS: tt.sms, Call: tt.call, Tone: "t", Cadence: "c"}}
		if _, err := f.app.Start(ctx, app.Request{Principal: alice}, in); !errors.Is(err, tt.want) {
			t.Fatalf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	if n := apptest.Outbox(t, f.store, events.TypeCampaignStarted); n != started {
		t.Fatalf("the outbox holds %d campaign_started events, want still %d", n, started)
	}
	page, err := f.app.List(ctx, alice, "doc_r", "", 10)
	if err != nil || len(page.Campaigns) != 1 {
		t.Fatalf("the document lists %d campaigns (%v), want 1", len(page.Campaigns), err)
	}
	// With a key, the 409 is an answer, stored.
	req := app.Request{Principal: alice, Key: "k-revoked", Fingerprint: "fp"}
	in := app.StartInput{DocumentID: "doc_r", StartInput: campaign.StartInput{Call: true, Tone: "t", Cadence: "c"}}
	for i := range 2 {
		ans, err := f.app.Start(ctx, req, in)
		if err != nil || ans.Status != http.StatusConflict || ans.Replayed != (i > 0) ||
			!strings.Contains(string(ans.Body), `"Every requested channel is opted out for this document."`) {
			t.Fatalf("attempt %d: got %d %s replayed=%v %v", i, ans.Status, ans.Body, ans.Replayed, err)
		}
	}
}

// TestConsentChanges: the state before anything, a revocation, a repeat
// (recorded, version up, the channel's changedAt kept), a grant back
// that re-activates the channel in active campaigns that did not opt it
// out themselves, and the errors.
func TestConsentChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.putDoc(t, "doc_c", alice.AccountID, "BEHIND", 1)
	f.putDoc(t, "doc_bob", bob.AccountID, "BEHIND", 1)
	own := f.startWith(t, alice, "doc_c", true, true, false)
	other := f.startWith(t, alice, "doc_c", true, false, true)

	st := f.consent(t, "doc_c")
	raw, _ := json.Marshal(st)
	if want := `{"documentId":"doc_c","channels":{"sms":{"status":"granted","changedAt":null,"eventId":null,"source":null},"email":{"status":"granted","changedAt":null,"eventId":null,"source":null},"call":{"status":"granted","changedAt":null,"eventId":null,"source":null}},"version":0}`; string(raw) != want {
		t.Fatalf("before anything: %s, want %s", raw, want)
	}

	revoked := f.changeConsent(t, "doc_c", "sms", events.ConsentRevoked)
	if revoked.Version != 1 || revoked.Channels.SMS.Source != events.SourceConsent || revoked.Channels.SMS.Status != events.ConsentRevoked {
		t.Fatalf("revoked: %+v", revoked)
	}
	repeat := f.changeConsent(t, "doc_c", "sms", events.ConsentRevoked)
	if repeat.Version != 2 || repeat.Channels.SMS != revoked.Channels.SMS {
		t.Fatalf("repeat: %+v, want version 2 and sms as it was (%+v)", repeat, revoked.Channels.SMS)
	}
	if n := apptest.Outbox(t, f.store, events.TypeConsentChanged); n != 2 {
		t.Fatalf("the outbox holds %d consent_changed, want 2 (a repeat is recorded)", n)
	}
	ev := f.lastEvent(t, events.TypeConsentChanged)
	if ev.CampaignID != "" || ev.Basis != "Borrower texted START" || ev.Consent == nil || ev.Consent.Version != 2 || ev.Channel != "sms" || ev.Status != "revoked" {
		t.Fatalf("consent_changed: %+v", ev)
	}
	if got := f.campaign(t, "doc_c", other.ID); !slices.Equal(got.ActiveChannels, []string{"call"}) {
		t.Fatalf("after the revocation: %v, want [call]", got.ActiveChannels)
	}

	// own opts out of sms itself; granting sms back brings it back to
	// other only.
	f.optOut(t, "doc_c", own.ID, campaign.SMS)
	granted := f.changeConsent(t, "doc_c", "all", events.ConsentGranted)
	if granted.Version != 4 || granted.Channels.SMS.Status != events.ConsentGranted || granted.Channels.SMS.Source != events.SourceConsent ||
		granted.Channels.Email.ChangedAt != "" {
		t.Fatalf("granted back: %+v, want version 4, sms granted by consent, email never changed", granted)
	}
	if got := f.campaign(t, "doc_c", other.ID); !slices.Equal(got.ActiveChannels, []string{"sms", "call"}) || len(got.Suppressed) != 0 {
		t.Fatalf("other after the grant: %v suppressed %v, want [sms call] and none", got.ActiveChannels, got.Suppressed)
	}
	if got := f.campaign(t, "doc_c", own.ID); !slices.Equal(got.ActiveChannels, []string{"email"}) || !got.Active {
		t.Fatalf("own after the grant: %v, want [email]: its own opt-out stays", got.ActiveChannels)
	}

	bad := []struct {
		name string
		p    principal.Principal
		in   app.ConsentInput
		want error
	}{
		{"unknown channel", alice, app.ConsentInput{DocumentID: "doc_c", Channel: "fax", Status: "revoked", Basis: "b"}, httpx.ErrInvalidBody},
		{"unknown status", alice, app.ConsentInput{DocumentID: "doc_c", Channel: "sms", Status: "maybe", Basis: "b"}, httpx.ErrInvalidBody},
		{"empty basis", alice, app.ConsentInput{DocumentID: "doc_c", Channel: "sms", Status: "revoked", Basis: "   "}, httpx.ErrInvalidBody},
		{"basis of 201", alice, app.ConsentInput{DocumentID: "doc_c", Channel: "sms", Status: "revoked", Basis: strings.Repeat("é", 201)}, httpx.ErrInvalidBody},
		{"notes of 2001", alice, app.ConsentInput{DocumentID: "doc_c", Channel: "sms", Status: "revoked", Basis: "b", Notes: strings.Repeat("n", 2001)}, httpx.ErrInvalidBody},
		{"body before ownership", alice, app.ConsentInput{DocumentID: "doc_missing", Channel: "fax", Status: "revoked", Basis: "b"}, httpx.ErrInvalidBody},
		{"unknown document", alice, app.ConsentInput{DocumentID: "doc_missing", Channel: "sms", Status: "revoked", Basis: "b"}, httpx.ErrNotFound},
		{"another account's", alice, app.ConsentInput{DocumentID: "doc_bob", Channel: "sms", Status: "revoked", Basis: "b"}, httpx.ErrNotFound},
	}
	for _, tt := range bad {
		if _, err := f.app.ChangeConsent(ctx, app.Request{Principal: tt.p}, tt.in); !errors.Is(err, tt.want) {
			t.Fatalf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := f.app.Consent(ctx, alice, "doc_bob"); !errors.Is(err, httpx.ErrNotFound) {
		t.Fatalf("another account's consent: got %v, want 404", err)
	}
	if st := f.consent(t, "doc_c"); st.Version != 4 {
		t.Fatalf("after the refused changes: version %d, want 4", st.Version)
	}

	// With a key, a consent change is recorded once.
	req := app.Request{Principal: alice, Key: "k-consent", Fingerprint: "fp"}
	in := app.ConsentInput{DocumentID: "doc_c", Channel: "email", Status: "revoked", Basis: "letter"}
	for i := range 3 {
		ans, err := f.app.ChangeConsent(ctx, req, in)
		if err != nil || ans.Status != http.StatusOK || ans.Replayed != (i > 0) {
			t.Fatalf("keyed change %d: %d %s replayed=%v %v", i, ans.Status, ans.Body, ans.Replayed, err)
		}
	}
	if st := f.consent(t, "doc_c"); st.Version != 5 {
		t.Fatalf("after a keyed change sent three times: version %d, want 5", st.Version)
	}
}
