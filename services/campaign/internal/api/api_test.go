package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/api"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/app/apptest"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

// deadline is the request deadline of the test service.
const deadline = time.Second

type service struct {
	url   string
	store *store.Store // on a direct client, for the test's own reads
	proxy *replyHolder
	relay *apptest.Relay
	p     principal.Principal
}

// newService runs the campaign API on loopback, its store reached through
// a proxy that can hold back a reply.
func newService(t *testing.T) *service {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	db := mongotest.NewDatabase(t)
	proxy := newReplyHolder(t, mongotest.URI(t))
	cl, err := mongox.Connect(proxy.URI(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	st := store.New(cl.Database(db))
	if err := st.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	gen := ids.NewGenerator(time.Now)
	rec := &apptest.Relay{}
	h := &api.Handler{Logger: logger, Campaigns: app.New(app.Config{
		Store: st, Relay: rec, NewID: gen.New, Now: time.Now, Logger: logger, Registerer: prometheus.NewRegistry(),
		Claims: idempotency.New(cl.Database(db), time.Now),
	})}
	s := &service{
		store: store.New(mongotest.Client(t).Database(db)),
		proxy: proxy, relay: rec,
		p: principal.Principal{AccountID: "org_idem", UserID: "user_1", SessionID: "sess_1", OrgID: "org_idem"},
	}
	router := httpx.NewRouter(logger, httpx.NewHTTPMetrics(prometheus.NewRegistry(), "campaign"), deadline)
	router.Group(func(r chi.Router) {
		r.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(w, r.WithContext(principal.WithPrincipal(r.Context(), s.p)))
			})
		})
		h.Routes(r)
	})
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *service) post(t *testing.T, path, key string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", s.url+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

func (s *service) putDoc(t *testing.T, id string) {
	t.Helper()
	doc := campaign.Document{ID: id, AccountID: s.p.AccountID, Loan: &campaign.Loan{Status: "BEHIND"}, Version: 1}
	if _, err := s.store.ApplyDocument(context.Background(), doc, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// outbox returns the events of type typ waiting in the outboxes.
func (s *service) outbox(t *testing.T, typ string) []store.Pending {
	t.Helper()
	pending, err := s.store.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Pending
	for _, p := range pending {
		if p.Type == typ {
			out = append(out, p)
		}
	}
	return out
}

var start = map[string]any{"sms": true, "email": false, "call": true, "tone": "kind", "cadence": "weekly", "notes": nil}

func await(t *testing.T, held <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatalf("the store never answered the %s", what)
	}
}

// startWrites are the writes of a start: the document record's write
// that makes it exist, its static fields included.
var startWrites = []struct{ command, collection string }{
	{"update", store.DocumentsCollection},
}

// TestStartAnswerLost: the store wrote the campaign but its reply came
// after the request's deadline, for either write of the start. The retry
// with the same Idempotency-Key answers that campaign: one campaign, one
// campaign_started event.
func TestStartAnswerLost(t *testing.T) {
	t.Parallel()
	for _, w := range startWrites {
		t.Run(w.command+" "+w.collection, func(t *testing.T) {
			t.Parallel()
			startAnswerLost(t, w.command, w.collection)
		})
	}
}

func startAnswerLost(t *testing.T, command, collection string) {
	s := newService(t)
	s.putDoc(t, "doc_lost")
	path := "/v1/documents/doc_lost/rcm"

	held := s.proxy.Hold(command, collection)
	if status, body := s.post(t, path, "start-lost", start); status < 500 {
		t.Fatalf("first attempt: got %d %v, want a failure past the deadline", status, body)
	}
	await(t, held, command)

	status, body := s.post(t, path, "start-lost", start)
	if status != http.StatusCreated {
		t.Fatalf("retry: got %d %v, want 201", status, body)
	}
	listed, err := s.store.ListByDocument(context.Background(), s.p.AccountID, "doc_lost", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 {
		t.Fatalf("the document has %d campaigns, want 1", len(listed))
	}
	if id := body["campaign"].(map[string]any)["id"]; id != listed[0].ID {
		t.Fatalf("the retry answered campaign %v, want the one the first attempt wrote, %s", id, listed[0].ID)
	}
	if started := s.outbox(t, events.TypeCampaignStarted); len(started) != 1 {
		t.Fatalf("the outbox holds %d campaign_started events, want 1", len(started))
	}
	// Answered once, the key replays.
	if status, again := s.post(t, path, "start-lost", start); status != http.StatusCreated || again["campaign"].(map[string]any)["id"] != listed[0].ID {
		t.Fatalf("second retry: got %d %v", status, again)
	}
}

// TestOptOutAnswerLost: the same for an opt-out whose update the store
// applied after the request gave up on it.
func TestOptOutAnswerLost(t *testing.T) {
	t.Parallel()
	s := newService(t)
	s.putDoc(t, "doc_opt_lost")
	path := "/v1/documents/doc_opt_lost/rcm"
	status, body := s.post(t, path, "", start)
	if status != http.StatusCreated {
		t.Fatalf("start: %d %v", status, body)
	}
	id := body["campaign"].(map[string]any)["id"].(string)
	opt := map[string]any{"campaignId": id, "channel": "sms", "notes": nil}

	held := s.proxy.Hold("update", store.DocumentsCollection)
	if status, body := s.post(t, path+"/opt-out", "opt-lost", opt); status < 500 {
		t.Fatalf("first attempt: got %d %v, want a failure past the deadline", status, body)
	}
	await(t, held, "update")
	for i := range 2 {
		if status, body := s.post(t, path+"/opt-out", "opt-lost", opt); status != http.StatusOK {
			t.Fatalf("retry %d: got %d %v, want 200", i, status, body)
		}
	}
	c, err := s.store.Get(context.Background(), s.p.AccountID, "doc_opt_lost", id)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.OptOuts) != 1 {
		t.Fatalf("the campaign recorded %d opt-outs, want 1", len(c.OptOuts))
	}
	if got := s.outbox(t, events.TypeOptOut); len(got) != 1 || got[0].ID != c.OptOuts[0].EventID {
		t.Fatalf("the outbox holds %d opt_out events, want the one recorded", len(got))
	}
}

// TestStartWrittenLate: the first attempt's write (either of the start's)
// reaches the store only after the retry ran: the retry wrote the
// campaign with the id chosen at the claim, and the late write adds
// nothing.
func TestStartWrittenLate(t *testing.T) {
	t.Parallel()
	for _, w := range startWrites {
		t.Run(w.command+" "+w.collection, func(t *testing.T) {
			t.Parallel()
			startWrittenLate(t, w.command, w.collection)
		})
	}
}

func startWrittenLate(t *testing.T, command, collection string) {
	s := newService(t)
	s.putDoc(t, "doc_late")
	path := "/v1/documents/doc_late/rcm"

	held, release := s.proxy.HoldRequest(command, collection)
	if status, body := s.post(t, path, "start-late", start); status < 500 {
		t.Fatalf("first attempt: got %d %v, want a failure past the deadline", status, body)
	}
	await(t, held, command)
	status, body := s.post(t, path, "start-late", start)
	if status != http.StatusCreated {
		t.Fatalf("retry: got %d %v, want 201", status, body)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	listed, err := s.store.ListByDocument(context.Background(), s.p.AccountID, "doc_late", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || body["campaign"].(map[string]any)["id"] != listed[0].ID {
		t.Fatalf("the document has %d campaigns, want the one the retry answered", len(listed))
	}
	if started := s.outbox(t, events.TypeCampaignStarted); len(started) != 1 {
		t.Fatalf("the outbox holds %d campaign_started events, want 1", len(started))
	}
}

// TestOptOutWrittenLate: the same for an opt-out; the revision
// compare-and-set keeps the late update from recording it twice.
func TestOptOutWrittenLate(t *testing.T) {
	t.Parallel()
	s := newService(t)
	s.putDoc(t, "doc_opt_late")
	path := "/v1/documents/doc_opt_late/rcm"
	status, body := s.post(t, path, "", start)
	if status != http.StatusCreated {
		t.Fatalf("start: %d %v", status, body)
	}
	id := body["campaign"].(map[string]any)["id"].(string)
	opt := map[string]any{"campaignId": id, "channel": "email", "notes": nil}

	held, release := s.proxy.HoldRequest("update", store.DocumentsCollection)
	if status, body := s.post(t, path+"/opt-out", "opt-late", opt); status < 500 {
		t.Fatalf("first attempt: got %d %v, want a failure past the deadline", status, body)
	}
	await(t, held, "update")
	if status, body := s.post(t, path+"/opt-out", "opt-late", opt); status != http.StatusOK {
		t.Fatalf("retry: got %d %v, want 200", status, body)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	c, err := s.store.Get(context.Background(), s.p.AccountID, "doc_opt_late", id)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.OptOuts) != 1 {
		t.Fatalf("the campaign recorded %d opt-outs, want 1", len(c.OptOuts))
	}
	if got := s.outbox(t, events.TypeOptOut); len(got) != 1 || got[0].ID != c.OptOuts[0].EventID {
		t.Fatalf("the outbox holds %d opt_out events, want the one recorded", len(got))
	}
}

func (s *service) get(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(s.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// TestConsentRoutes: the consent routes decode strictly, answer the
// consent state, and replay a keyed change.
func TestConsentRoutes(t *testing.T) {
	t.Parallel()
	s := newService(t)
	s.putDoc(t, "doc_consent")
	path := "/v1/documents/doc_consent/consent"
	if status, body := s.get(t, path); status != http.StatusOK || body["version"] != float64(0) || body["documentId"] != "doc_consent" {
		t.Fatalf("GET before anything: %d %v", status, body)
	}
	change := map[string]any{"channel": "call", "status": "revoked", "basis": "called to revoke"}
	for i := range 2 {
		status, body := s.post(t, path, "consent-key", change)
		call := body["channels"].(map[string]any)["call"].(map[string]any)
		if status != http.StatusOK || body["version"] != float64(1) || call["status"] != "revoked" || call["source"] != "consent" {
			t.Fatalf("POST %d: %d %v", i, status, body)
		}
	}
	if n := len(s.outbox(t, events.TypeConsentChanged)); n != 1 {
		t.Fatalf("the outbox holds %d consent_changed, want 1", n)
	}
	for name, body := range map[string]any{
		"unknown field":    map[string]any{"channel": "call", "status": "revoked", "basis": "b", "extra": 1},
		"missing basis":    map[string]any{"channel": "call", "status": "revoked"},
		"status not known": map[string]any{"channel": "call", "status": "maybe", "basis": "b"},
	} {
		if status, got := s.post(t, path, "", body); status != http.StatusBadRequest || got["error"] != "Invalid body." {
			t.Fatalf("%s: %d %v, want 400 Invalid body.", name, status, got)
		}
	}
	if status, got := s.get(t, "/v1/documents/doc_unknown/consent"); status != http.StatusNotFound || got["error"] != "Not found." {
		t.Fatalf("unknown document: %d %v", status, got)
	}
}

// TestContactRoutes: the contact routes decode strictly and answer the
// contract's bodies: a blocked attempt's details, an inbound contact, its
// outcome, the list, and the clearance's query errors. (The rules that
// hang on the hour are the use cases' tests, on their own clock.)
func TestContactRoutes(t *testing.T) {
	t.Parallel()
	s := newService(t)
	s.putDoc(t, "doc_contact")
	base := "/v1/documents/doc_contact"
	status, body := s.post(t, base+"/rcm", "", start) // sms and call
	if status != http.StatusCreated {
		t.Fatalf("start: %d %v", status, body)
	}
	id := body["campaign"].(map[string]any)["id"].(string)

	status, body = s.post(t, base+"/contact-attempts", "", map[string]any{"campaignId": id, "channel": "email"})
	details, _ := body["details"].(map[string]any)
	if status != http.StatusConflict || body["error"] != "Contact not permitted." || details["reason"] != "channel_not_in_campaign" ||
		details["nextAllowedAt"] != nil || details["attemptId"] == nil {
		t.Fatalf("blocked: %d %v", status, body)
	}
	if _, ok := details["nextAllowedAt"]; !ok {
		t.Fatalf("blocked: details %v carry no nextAllowedAt, want it null", details)
	}
	status, body = s.post(t, base+"/contact-attempts", "k-inbound", map[string]any{"channel": "call", "direction": "inbound"})
	att, _ := body["attempt"].(map[string]any)
	if status != http.StatusCreated || att["campaignId"] != nil || att["decision"] != "allowed" || att["direction"] != "inbound" {
		t.Fatalf("inbound: %d %v", status, body)
	}
	if _, ok := att["notes"]; ok {
		t.Fatalf("inbound: %v carries notes, want them omitted", att)
	}
	status, body = s.post(t, base+"/contact-attempts/"+att["id"].(string)+"/outcome", "", map[string]any{"outcome": "conversation"})
	if status != http.StatusOK || body["attempt"].(map[string]any)["outcome"] != "conversation" {
		t.Fatalf("outcome: %d %v", status, body)
	}
	if status, body = s.post(t, base+"/contact-attempts/"+details["attemptId"].(string)+"/outcome", "", map[string]any{"outcome": "delivered"}); status != http.StatusNotFound || body["error"] != "Attempt not found or access denied." {
		t.Fatalf("outcome of the blocked attempt: %d %v", status, body)
	}
	for name, b := range map[string]any{
		"unknown field":  map[string]any{"channel": "call", "direction": "inbound", "extra": true},
		"no channel":     map[string]any{"campaignId": id},
		"outbound alone": map[string]any{"channel": "sms"},
	} {
		if status, got := s.post(t, base+"/contact-attempts", "", b); status != http.StatusBadRequest || got["error"] != "Invalid body." {
			t.Fatalf("%s: %d %v", name, status, got)
		}
	}
	status, body = s.get(t, base+"/contact-attempts?limit=1")
	if list := body["attempts"].([]any); status != http.StatusOK || len(list) != 1 || list[0].(map[string]any)["id"] != att["id"] || body["nextCursor"] != att["id"] {
		t.Fatalf("list: %d %v", status, body)
	}
	for q, want := range map[string]int{
		"?channel=fax":                          400,
		"?channel=call&at=yesterday":            400,
		"?channel=call&at=2001-01-01T00:00:00Z": 400,
		"?channel=call&campaignId=rcm_x":        404,
		"?channel=sms&campaignId=" + id:         200,
	} {
		if status, got := s.get(t, base+"/contact-clearance"+q); status != want {
			t.Fatalf("clearance%s: %d %v, want %d", q, status, got, want)
		}
	}
}
