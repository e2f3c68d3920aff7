package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/app/apptest"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

var (
	logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	alice  = principal.Principal{AccountID: "org_a", UserID: "user_a", SessionID: "sess_a", OrgID: "org_a"}
	bob    = principal.Principal{AccountID: "org_b", UserID: "user_b", SessionID: "sess_b", OrgID: "org_b"}
)

type fixture struct {
	app    *app.Campaigns
	store  *store.Store
	relay  *apptest.Relay
	claims *idempotency.Store
	db     string
}

// newFixture returns the use cases on a fresh database of the embedded
// store, with a relay that records.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	db := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	f := &fixture{store: apptest.NewStore(t, db), relay: &apptest.Relay{}, claims: idempotency.New(db, time.Now), db: db.Name()}
	f.app = f.with(f.store, f.relay)
	return f
}

// with returns use cases on st and relay that share f's claims.
func (f *fixture) with(st *store.Store, relay app.Relay) *app.Campaigns {
	gen := ids.NewGenerator(time.Now)
	return app.New(app.Config{Store: st, Relay: relay, Claims: f.claims, NewID: gen.New, Now: time.Now,
		Logger: logger, Registerer: prometheus.NewRegistry()})
}

func (f *fixture) putDoc(t *testing.T, id, account, loan string, version int64) {
	t.Helper()
	doc := campaign.Document{ID: id, AccountID: account, Version: version}
	if loan != "" {
		doc.Loan = &campaign.Loan{Status: loan}
	}
	if err := f.app.ApplyDocument(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
}

func startInput(documentID string) app.StartInput {
	return app.StartInput{DocumentID: documentID, StartInput: campaign.StartInput{SMS: true, Call: true, Tone: " kind ", Cadence: "weekly"}}
}

// startedCampaign decodes the answer to a start.
func startedCampaign(t *testing.T, ans app.Answer) events.CampaignRecord {
	t.Helper()
	var body struct {
		Campaign events.CampaignRecord `json:"campaign"`
	}
	if err := json.Unmarshal(ans.Body, &body); err != nil {
		t.Fatalf("answer %q: %v", ans.Body, err)
	}
	return body.Campaign
}

func (f *fixture) start(t *testing.T, p principal.Principal, documentID string) events.CampaignRecord {
	t.Helper()
	ans, err := f.app.Start(context.Background(), app.Request{Principal: p}, startInput(documentID))
	if err != nil {
		t.Fatalf("start on %s: %v", documentID, err)
	}
	return startedCampaign(t, ans)
}

func TestStart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.putDoc(t, "doc_behind", alice.AccountID, "BEHIND", 1)
	f.putDoc(t, "doc_current", alice.AccountID, "CURRENT", 1)
	f.putDoc(t, "doc_no_loan", alice.AccountID, "", 1)
	f.putDoc(t, "doc_deleted", alice.AccountID, "BEHIND", 1)
	if err := f.app.DeleteDocument(context.Background(), "doc_deleted"); err != nil {
		t.Fatal(err)
	}
	noChannel := startInput("doc_behind")
	noChannel.SMS, noChannel.Call = false, false
	longTone := startInput("doc_behind")
	longTone.Tone = strings.Repeat("t", contract.MaxTone+1)
	// The contract's order: body before the channel rule before ownership
	// before the loan rule.
	badBodyNoChannelNoDoc := noChannel
	badBodyNoChannelNoDoc.Tone, badBodyNoChannelNoDoc.DocumentID = "", "doc_missing"
	noChannelNoDoc := noChannel
	noChannelNoDoc.DocumentID = "doc_missing"

	tests := []struct {
		name string
		p    principal.Principal
		in   app.StartInput
		want error // nil: started
	}{
		{"loan behind", alice, startInput("doc_behind"), nil},
		{"loan current", alice, startInput("doc_current"), httpx.ErrLoanRule},
		{"no loan", alice, startInput("doc_no_loan"), httpx.ErrLoanRule},
		{"unknown document", alice, startInput("doc_missing"), httpx.ErrNotFound},
		{"deleted document", alice, startInput("doc_deleted"), httpx.ErrNotFound},
		{"another account's document", bob, startInput("doc_behind"), httpx.ErrNotFound},
		{"no channel", alice, noChannel, httpx.ErrNoChannel},
		{"tone too long", alice, longTone, httpx.ErrInvalidBody},
		{"body before channel rule", alice, badBodyNoChannelNoDoc, httpx.ErrInvalidBody},
		{"channel rule before ownership", alice, noChannelNoDoc, httpx.ErrNoChannel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.relay.Types())
			ans, err := f.app.Start(context.Background(), app.Request{Principal: tt.p}, tt.in)
			handed := f.relay.Types()[before:]
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
				if len(handed) != 0 {
					t.Fatalf("a refused start handed %v to the relay", handed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := startedCampaign(t, ans)
			if ans.Status != http.StatusCreated || ans.Replayed || !c.Active || c.Tone != "kind" || !slices.Equal(c.ActiveChannels, []string{"sms", "call"}) {
				t.Fatalf("got %d replayed=%v %+v, want 201 with an active campaign on sms and call", ans.Status, ans.Replayed, c)
			}
			if !slices.Equal(handed, []string{events.TypeCampaignStarted}) {
				t.Fatalf("handed %v to the relay, want one campaign_started", handed)
			}
			stored, err := f.store.Get(context.Background(), tt.p.AccountID, c.DocumentID, c.ID)
			if err != nil || stored.DocumentID != tt.in.DocumentID || stored.CreatedBy != tt.p.UserID {
				t.Fatalf("stored %+v %v, want the campaign on %s by %s", stored, err, tt.in.DocumentID, tt.p.UserID)
			}
		})
	}
	if n := apptest.Outbox(t, f.store, events.TypeCampaignStarted); n != 1 {
		t.Fatalf("the outbox holds %d campaign_started events, want 1", n)
	}
}

// TestIdempotencyKey: a command sent with a key runs once; a retry gets
// the stored answer, contract errors included; another request with the
// key is refused.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.putDoc(t, "doc_key", alice.AccountID, "BEHIND", 1)
	req := func(key, fingerprint string) app.Request {
		return app.Request{Principal: alice, Key: key, Fingerprint: fingerprint}
	}

	first, err := f.app.Start(ctx, req("k-start", "fp-start"), startInput("doc_key"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.app.Start(ctx, req("k-start", "fp-start"), startInput("doc_key"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Replayed || again.Status != first.Status || string(again.Body) != string(first.Body) {
		t.Fatalf("retry: got %d %q replayed=%v, want %d %q replayed", again.Status, again.Body, again.Replayed, first.Status, first.Body)
	}
	if got := f.relay.Types(); len(got) != 1 {
		t.Fatalf("handed %v to the relay, want one event", got)
	}
	if _, err := f.app.Start(ctx, req("k-start", "fp-other"), startInput("doc_key")); !errors.Is(err, httpx.ErrKeyReused) {
		t.Fatalf("key reused for another request: got %v, want %v", err, httpx.ErrKeyReused)
	}
	// The same key in another account is another key. With a key, a
	// contract error is an answer, to be stored.
	if ans, err := f.app.Start(ctx, app.Request{Principal: bob, Key: "k-start", Fingerprint: "fp-start"}, startInput("doc_key")); err != nil || ans.Replayed || ans.Status != http.StatusNotFound {
		t.Fatalf("another account's key: got %d %q replayed=%v %v, want a fresh 404", ans.Status, ans.Body, ans.Replayed, err)
	}

	// A contract error is stored and replayed, even once the document
	// exists.
	if ans, err := f.app.Start(ctx, req("k-missing", "fp-missing"), startInput("doc_later")); err != nil || ans.Replayed || ans.Status != http.StatusNotFound {
		t.Fatalf("unknown document: got %d %q replayed=%v %v, want a fresh 404", ans.Status, ans.Body, ans.Replayed, err)
	}
	f.putDoc(t, "doc_later", alice.AccountID, "BEHIND", 1)
	replayed, err := f.app.Start(ctx, req("k-missing", "fp-missing"), startInput("doc_later"))
	if err != nil || !replayed.Replayed || replayed.Status != http.StatusNotFound {
		t.Fatalf("retry of the 404: got %d %q %v, want the 404 replayed", replayed.Status, replayed.Body, err)
	}

	id := startedCampaign(t, first).ID
	opt := app.OptOutInput{DocumentID: "doc_key", CampaignID: id, Channel: campaign.SMS}
	for i := range 3 {
		ans, err := f.app.OptOut(ctx, req("k-opt", "fp-opt"), opt)
		if err != nil || ans.Status != http.StatusOK || ans.Replayed != (i > 0) {
			t.Fatalf("opt-out %d: got %d %q replayed=%v %v", i, ans.Status, ans.Body, ans.Replayed, err)
		}
	}
	c, err := f.store.Get(ctx, alice.AccountID, "doc_key", id)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.OptOuts) != 1 || c.OptOuts[0].RequestKey != "k-opt" {
		t.Fatalf("recorded %+v, want one opt-out with its key", c.OptOuts)
	}
	if n := apptest.Outbox(t, f.store, events.TypeOptOut); n != 1 {
		t.Fatalf("the outbox holds %d opt_out events, want 1", n)
	}
}

// TestFailureBeforeAnyWriteReleasesTheKey: a start whose document read
// failed wrote nothing, so its claim is released and a retry with the key
// runs afresh (no recovery, nothing missed); the failure is not stored.
func TestFailureBeforeAnyWriteReleasesTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.putDoc(t, "doc_down", alice.AccountID, "BEHIND", 1)

	// A store whose client is gone: every read fails, and the claims,
	// on a working client, are taken.
	cl, err := mongox.Connect(mongotest.URI(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	downRelay := &apptest.Relay{}
	down := f.with(store.New(cl.Database(f.db)), downRelay)
	req := app.Request{Principal: alice, Key: "k-down", Fingerprint: "fp-down"}
	if _, err := down.Start(ctx, req, startInput("doc_down")); err == nil || !idempotency.IsNothingWritten(err) {
		t.Fatalf("start on a store that is down: got %v, want a failure before any write", err)
	}

	ans, err := f.app.Start(ctx, req, startInput("doc_down"))
	if err != nil || ans.Replayed || ans.Status != http.StatusCreated {
		t.Fatalf("retry: got %d %q replayed=%v %v, want a fresh 201", ans.Status, ans.Body, ans.Replayed, err)
	}
	if n := f.relay.MissedCount(); n != 0 {
		t.Fatalf("the retry recovered (%d missed), want it to run afresh on a released claim", n)
	}
	if got := append(downRelay.Types(), f.relay.Types()...); !slices.Equal(got, []string{events.TypeCampaignStarted}) {
		t.Fatalf("handed %v to the relays, want one campaign_started", got)
	}
}

func TestOptOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.putDoc(t, "doc_opt", alice.AccountID, "BEHIND", 1)
	f.putDoc(t, "doc_other", alice.AccountID, "BEHIND", 1)

	tests := []struct {
		name        string
		p           principal.Principal
		documentID  string
		campaignID  func(id string) string
		channel     campaign.Channel
		want        error
		wantActive  []string
		wantRunning bool
	}{
		{name: "one channel", p: alice, documentID: "doc_opt", channel: campaign.SMS, wantActive: []string{"call"}, wantRunning: true},
		{name: "the last channel", p: alice, documentID: "doc_opt", channel: campaign.Call, wantActive: nil, wantRunning: false},
		{name: "again on an inactive campaign", p: alice, documentID: "doc_opt", channel: campaign.All, wantActive: nil, wantRunning: false},
		{name: "unknown channel", p: alice, documentID: "doc_opt", channel: "fax", want: httpx.ErrInvalidBody},
		{name: "another document", p: alice, documentID: "doc_other", channel: campaign.SMS, want: httpx.ErrCampaignNotFound},
		{name: "another account", p: bob, documentID: "doc_opt", channel: campaign.SMS, want: httpx.ErrCampaignNotFound},
		{name: "not a campaign id", p: alice, documentID: "doc_opt", campaignID: func(string) string { return "nope" }, channel: campaign.SMS, want: httpx.ErrCampaignNotFound},
		{name: "unknown campaign", p: alice, documentID: "doc_opt", campaignID: func(string) string { return ids.NewGenerator(time.Now).New(ids.CampaignPrefix) }, channel: campaign.SMS, want: httpx.ErrCampaignNotFound},
	}
	id := f.start(t, alice, "doc_opt").ID
	opted := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := app.OptOutInput{DocumentID: tt.documentID, CampaignID: id, Channel: tt.channel, Notes: " asked by phone "}
			if tt.campaignID != nil {
				in.CampaignID = tt.campaignID(id)
			}
			before := len(f.relay.Types())
			ans, err := f.app.OptOut(ctx, app.Request{Principal: tt.p}, in)
			handed := f.relay.Types()[before:]
			if tt.want != nil {
				if !errors.Is(err, tt.want) || len(handed) != 0 {
					t.Fatalf("got %v and %v handed over, want %v and nothing", err, handed, tt.want)
				}
				return
			}
			if err != nil || ans.Status != http.StatusOK || strings.TrimSpace(string(ans.Body)) != `{"ok":true}` {
				t.Fatalf("got %d %q %v, want 200 ok", ans.Status, ans.Body, err)
			}
			opted++
			if !slices.Equal(handed, []string{events.TypeOptOut}) {
				t.Fatalf("handed %v to the relay, want one opt_out", handed)
			}
			c, err := f.store.Get(ctx, alice.AccountID, "doc_opt", id)
			if err != nil {
				t.Fatal(err)
			}
			var active []string
			for _, ch := range c.ActiveChannels {
				active = append(active, string(ch))
			}
			if !slices.Equal(active, tt.wantActive) || c.Active != tt.wantRunning || len(c.OptOuts) != opted || c.OptOuts[opted-1].Notes != "asked by phone" {
				t.Fatalf("campaign %+v, want channels %v active=%v and %d opt-outs", c, tt.wantActive, tt.wantRunning, opted)
			}
		})
	}
}

func TestQueries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	f.putDoc(t, "doc_q", alice.AccountID, "BEHIND", 1)
	f.putDoc(t, "doc_empty", alice.AccountID, "BEHIND", 1)
	f.putDoc(t, "doc_gone", alice.AccountID, "BEHIND", 1)
	var made []string
	for range 3 {
		made = append(made, f.start(t, alice, "doc_q").ID)
	}
	slices.Reverse(made)
	gone := f.start(t, alice, "doc_gone").ID
	if err := f.app.DeleteDocument(ctx, "doc_gone"); err != nil {
		t.Fatal(err)
	}

	lists := []struct {
		name       string
		p          principal.Principal
		documentID string
		cursor     string
		want       []string
		wantNext   string
		wantErr    error
	}{
		{name: "first page", p: alice, documentID: "doc_q", want: made[:2], wantNext: made[1]},
		{name: "last page", p: alice, documentID: "doc_q", cursor: made[1], want: made[2:]},
		{name: "no campaigns", p: alice, documentID: "doc_empty"},
		{name: "deleted document lists what it had", p: alice, documentID: "doc_gone", want: []string{gone}},
		{name: "unknown document", p: alice, documentID: "doc_missing", wantErr: httpx.ErrNotFound},
		{name: "another account's document", p: bob, documentID: "doc_q", wantErr: httpx.ErrNotFound},
	}
	for _, tt := range lists {
		t.Run("list/"+tt.name, func(t *testing.T) {
			page, err := f.app.List(ctx, tt.p, tt.documentID, tt.cursor, 2)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range page.Campaigns {
				got = append(got, c.ID)
			}
			if !slices.Equal(got, tt.want) || page.Next != tt.wantNext {
				t.Fatalf("got %v next %q, want %v next %q", got, page.Next, tt.want, tt.wantNext)
			}
		})
	}

	gets := []struct {
		name       string
		p          principal.Principal
		documentID string
		campaignID string
		want       error
	}{
		{"found", alice, "doc_q", made[0], nil},
		{"on another document", alice, "doc_empty", made[0], httpx.ErrCampaignNotFound},
		{"of another account", bob, "doc_q", made[0], httpx.ErrCampaignNotFound},
		{"not a campaign id", alice, "doc_q", "nope", httpx.ErrCampaignNotFound},
	}
	for _, tt := range gets {
		t.Run("get/"+tt.name, func(t *testing.T) {
			c, err := f.app.Campaign(ctx, tt.p, tt.documentID, tt.campaignID)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if tt.want == nil && c.ID != tt.campaignID {
				t.Fatalf("got campaign %s, want %s", c.ID, tt.campaignID)
			}
		})
	}
}
