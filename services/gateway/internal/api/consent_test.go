package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/gateway/internal/upstream"
)

func TestParseConsent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		body  string
		want  error
		check func(t *testing.T, c ConsentCommand)
	}{
		{name: "valid", body: `{"channel":"sms","status":"revoked","basis":"Borrower texted STOP"}`, check: func(t *testing.T, c ConsentCommand) {
			if c != (ConsentCommand{Channel: "sms", Status: "revoked", Basis: "Borrower texted STOP"}) {
				t.Fatalf("got %+v", c)
			}
		}},
		{name: "spec example", body: `{"channel":"all","status":"granted","basis":"Borrower texted START on 2026-05-01","notes":"by SMS"}`},
		{name: "email granted", body: `{"channel":"email","status":"granted","basis":"letter"}`},
		{name: "call revoked", body: `{"channel":"call","status":"revoked","basis":"called"}`},
		{name: "trims basis and notes, drops unknown fields", body: `{"channel":"sms","status":"revoked","basis":"  STOP  ","notes":"\t x \n","extra":1}`, check: func(t *testing.T, c ConsentCommand) {
			if c.Basis != "STOP" || c.Notes != "x" {
				t.Fatalf("got basis %q notes %q, want trimmed", c.Basis, c.Notes)
			}
			raw, _ := json.Marshal(c)
			if string(raw) != `{"channel":"sms","status":"revoked","basis":"STOP","notes":"x"}` {
				t.Fatalf("forwarded %s", raw)
			}
		}},
		{name: "whitespace notes become absent", body: `{"channel":"sms","status":"revoked","basis":"b","notes":"   "}`, check: func(t *testing.T, c ConsentCommand) {
			raw, _ := json.Marshal(c)
			if string(raw) != `{"channel":"sms","status":"revoked","basis":"b"}` {
				t.Fatalf("forwarded %s, want no notes", raw)
			}
		}},
		{name: "basis 200", body: `{"channel":"sms","status":"revoked","basis":"` + strings.Repeat("é", 200) + `"}`},
		{name: "basis 201", body: `{"channel":"sms","status":"revoked","basis":"` + strings.Repeat("é", 201) + `"}`, want: httpx.ErrInvalidBody},
		{name: "basis whitespace", body: `{"channel":"sms","status":"revoked","basis":"   "}`, want: httpx.ErrInvalidBody},
		{name: "basis missing", body: `{"channel":"sms","status":"revoked"}`, want: httpx.ErrInvalidBody},
		{name: "basis null", body: `{"channel":"sms","status":"revoked","basis":null}`, want: httpx.ErrInvalidBody},
		{name: "basis number", body: `{"channel":"sms","status":"revoked","basis":1}`, want: httpx.ErrInvalidBody},
		{name: "channel missing", body: `{"status":"revoked","basis":"b"}`, want: httpx.ErrInvalidBody},
		{name: "channel unknown", body: `{"channel":"fax","status":"revoked","basis":"b"}`, want: httpx.ErrInvalidBody},
		{name: "channel uppercase", body: `{"channel":"SMS","status":"revoked","basis":"b"}`, want: httpx.ErrInvalidBody},
		{name: "status unknown", body: `{"channel":"sms","status":"opted_out","basis":"b"}`, want: httpx.ErrInvalidBody},
		{name: "status missing", body: `{"channel":"sms","basis":"b"}`, want: httpx.ErrInvalidBody},
		{name: "status boolean", body: `{"channel":"sms","status":true,"basis":"b"}`, want: httpx.ErrInvalidBody},
		{name: "notes 2001", body: `{"channel":"sms","status":"revoked","basis":"b","notes":"` + strings.Repeat("n", 2001) + `"}`, want: httpx.ErrInvalidBody},
		{name: "array body", body: `[]`, want: httpx.ErrInvalidBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := parse(t, tt.body, "application/json", ParseConsent)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got err %v, want %v", err, tt.want)
			}
			if err == nil && tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestParseAttempt(t *testing.T) {
	t.Parallel()
	const id = "rcm_01k0b2z9y8x7w6v5u4t3s2r1q0"
	tests := []struct {
		name    string
		body    string
		want    error
		forward string // the JSON forwarded, when checked
	}{
		{name: "outbound, direction defaulted", body: `{"campaignId":"` + id + `","channel":"call"}`,
			forward: `{"campaignId":"` + id + `","channel":"call","direction":"outbound"}`},
		{name: "outbound explicit", body: `{"campaignId":"` + id + `","channel":"sms","direction":"outbound","notes":" n "}`,
			forward: `{"campaignId":"` + id + `","channel":"sms","direction":"outbound","notes":"n"}`},
		{name: "null direction is the default", body: `{"campaignId":"` + id + `","channel":"email","direction":null}`,
			forward: `{"campaignId":"` + id + `","channel":"email","direction":"outbound"}`},
		{name: "inbound without a campaign", body: `{"channel":"sms","direction":"inbound","notes":"  "}`,
			forward: `{"channel":"sms","direction":"inbound"}`},
		{name: "inbound with a campaign", body: `{"campaignId":" ` + id + ` ","channel":"call","direction":"inbound"}`,
			forward: `{"campaignId":"` + id + `","channel":"call","direction":"inbound"}`},
		{name: "unknown fields dropped", body: `{"campaignId":"` + id + `","channel":"call","decision":"allowed"}`,
			forward: `{"campaignId":"` + id + `","channel":"call","direction":"outbound"}`},
		{name: "outbound without a campaign", body: `{"channel":"call"}`, want: httpx.ErrInvalidBody},
		{name: "outbound with a null campaign", body: `{"campaignId":null,"channel":"call","direction":"outbound"}`, want: httpx.ErrInvalidBody},
		{name: "empty campaign", body: `{"campaignId":"  ","channel":"call","direction":"inbound"}`, want: httpx.ErrInvalidBody},
		{name: "campaign 129", body: `{"campaignId":"` + strings.Repeat("r", 129) + `","channel":"call"}`, want: httpx.ErrInvalidBody},
		{name: "numeric campaign", body: `{"campaignId":7,"channel":"call"}`, want: httpx.ErrInvalidBody},
		{name: "channel all", body: `{"campaignId":"` + id + `","channel":"all"}`, want: httpx.ErrInvalidBody},
		{name: "channel missing", body: `{"campaignId":"` + id + `"}`, want: httpx.ErrInvalidBody},
		{name: "direction unknown", body: `{"campaignId":"` + id + `","channel":"call","direction":"sideways"}`, want: httpx.ErrInvalidBody},
		{name: "direction empty", body: `{"campaignId":"` + id + `","channel":"call","direction":""}`, want: httpx.ErrInvalidBody},
		{name: "direction number", body: `{"campaignId":"` + id + `","channel":"call","direction":1}`, want: httpx.ErrInvalidBody},
		{name: "notes 2001", body: `{"campaignId":"` + id + `","channel":"call","notes":"` + strings.Repeat("n", 2001) + `"}`, want: httpx.ErrInvalidBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := parse(t, tt.body, "application/json", ParseAttempt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got err %v, want %v", err, tt.want)
			}
			if err == nil && tt.forward != "" {
				if raw, _ := json.Marshal(c); string(raw) != tt.forward {
					t.Fatalf("forwarded %s, want %s", raw, tt.forward)
				}
			}
		})
	}
}

func TestParseOutcome(t *testing.T) {
	t.Parallel()
	for _, o := range []string{"no_answer", "voicemail", "conversation", "failed", "delivered", "bounced"} {
		c, err := parse(t, `{"outcome":"`+o+`","notes":"  "}`, "application/json", ParseOutcome)
		if err != nil || c != (OutcomeCommand{Outcome: o}) {
			t.Errorf("outcome %s: got %+v, %v", o, c, err)
		}
	}
	c, err := parse(t, `{"outcome":" conversation ","notes":" said yes ","x":1}`, "application/json", ParseOutcome)
	if raw, _ := json.Marshal(c); err != nil || string(raw) != `{"outcome":"conversation","notes":"said yes"}` {
		t.Errorf("got %s, %v", raw, err)
	}
	for name, body := range map[string]string{
		"unknown":    `{"outcome":"answered"}`,
		"uppercase":  `{"outcome":"FAILED"}`,
		"missing":    `{"notes":"x"}`,
		"null":       `{"outcome":null}`,
		"number":     `{"outcome":3}`,
		"notes 2001": `{"outcome":"failed","notes":"` + strings.Repeat("n", 2001) + `"}`,
	} {
		if _, err := parse(t, body, "application/json", ParseOutcome); !errors.Is(err, httpx.ErrInvalidBody) {
			t.Errorf("%s: got %v, want Invalid body.", name, err)
		}
	}
}

func TestParseClearance(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		query string
		ok    bool
		want  string // the query forwarded
	}{
		{"channel=call", true, "channel=call"},
		{"channel=sms&campaignId=rcm_1&junk=1", true, "campaignId=rcm_1&channel=sms"},
		{"channel=email&at=2026-05-01T12:00:00.000Z", true, "at=2026-05-01T12%3A00%3A00Z&channel=email"},
		{"channel=call&at=2026-05-01T11:59:00Z", true, "at=2026-05-01T11%3A59%3A00Z&channel=call"},
		{"channel=call&at=2026-05-01T11:58:59.999Z", false, ""},
		{"channel=call&at=2027-05-02T12:00:00Z", true, "at=2027-05-02T12%3A00%3A00Z&channel=call"},
		{"channel=call&at=2027-05-02T12:00:00.001Z", false, ""},
		{"channel=call&at=2026-05-01T12:00:00.5Z", true, "at=2026-05-01T12%3A00%3A00.5Z&channel=call"},
		{"channel=call&at=2026-05-01T12:00:00%2B00:00", false, ""},
		{"channel=call&at=2026-05-01T12:00:00+00:00", false, ""},
		{"channel=call&at=2026-05-01T08:00:00-04:00", false, ""},
		{"channel=call&at=2026-05-01", false, ""},
		{"channel=call&at=", false, ""},
		{"channel=call&at=now", false, ""},
		{"channel=call&at=2026-05-01T12:00:00Z&at=2026-05-01T12:00:00Z", false, ""},
		{"", false, ""},
		{"channel=", false, ""},
		{"channel=all", false, ""},
		{"channel=CALL", false, ""},
		{"channel=call&channel=sms", false, ""},
		{"channel=call&campaignId=a&campaignId=b", false, ""},
		{"channel=call&campaignId=", true, "campaignId=&channel=call"},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseClearance(q, now)
		if tt.ok != (err == nil) {
			t.Errorf("%q: got %v, want ok=%v", tt.query, err, tt.ok)
			continue
		}
		if err != nil {
			var he *httpx.Error
			if !errors.As(err, &he) || he.Message != "Invalid query parameter." {
				t.Errorf("%q: got %v, want Invalid query parameter.", tt.query, err)
			}
			continue
		}
		if got := c.Encode(); got != tt.want {
			t.Errorf("%q: forwards %q, want %q", tt.query, got, tt.want)
		}
	}
}

// received is what the fake campaign service was sent.
type received struct {
	method, path, query, body, key string
}

// gateway serves the handler's routes with a fixed principal in front of
// a fake campaign service on a loopback socket that records what reaches
// it and answers 200 {}.
func gateway(t *testing.T) (*httptest.Server, <-chan received) {
	t.Helper()
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan received, 1)
	campaign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(body), r.Header.Get("Idempotency-Key")}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	t.Cleanup(campaign.Close)
	svc, err := upstream.New(campaign.URL, signer, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := principal.Principal{AccountID: "org_1", UserID: "user_1"}
			next.ServeHTTP(w, r.WithContext(principal.WithPrincipal(r.Context(), p)))
		})
	})
	(&Handler{Campaign: svc}).Routes(r)
	gw := httptest.NewServer(r)
	t.Cleanup(gw.Close)
	return gw, got
}

// TestConsentRoutes: each new route checks what the contract says in its
// order and forwards the normalized command, its query and its
// Idempotency-Key to the campaign service at the same path.
func TestConsentRoutes(t *testing.T) {
	t.Parallel()
	gw, got := gateway(t)
	const doc, att = "/v1/documents/doc_1", "att_01k0b2z9y8x7w6v5u4t3s2r1q0"
	bad := "/v1/documents/" + url.PathEscape("bad id!")
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name, method, path, body, key string
		status                        int
		message                       string // the error, or "" when forwarded
		forward                       received
	}{
		{name: "consent read", method: "GET", path: doc + "/consent", status: 200,
			forward: received{method: "GET", path: doc + "/consent"}},
		{name: "consent change", method: "POST", path: doc + "/consent", key: "k1", body: `{"channel":"sms","status":"revoked","basis":" STOP ","notes":""}`, status: 200,
			forward: received{method: "POST", path: doc + "/consent", body: `{"channel":"sms","status":"revoked","basis":"STOP"}`, key: "k1"}},
		{name: "consent, body before ownership", method: "POST", path: bad + "/consent", body: `{"channel":"sms"}`, status: 400, message: contract.MsgInvalidBody},
		{name: "consent, malformed document", method: "POST", path: bad + "/consent", body: `{"channel":"sms","status":"revoked","basis":"b"}`, status: 404, message: contract.MsgNotFound},
		{name: "consent read, malformed document", method: "GET", path: bad + "/consent", status: 404, message: contract.MsgNotFound},
		{name: "consent, bad key", method: "POST", path: doc + "/consent", key: "clé", body: `{}`, status: 400, message: contract.MsgIdempotencyKey},
		{name: "attempt", method: "POST", path: doc + "/contact-attempts", key: "k2", body: `{"campaignId":"rcm_1","channel":"call"}`, status: 200,
			forward: received{method: "POST", path: doc + "/contact-attempts", body: `{"campaignId":"rcm_1","channel":"call","direction":"outbound"}`, key: "k2"}},
		{name: "attempt, body before ownership", method: "POST", path: bad + "/contact-attempts", body: `{"channel":"call"}`, status: 400, message: contract.MsgInvalidBody},
		{name: "attempt, malformed document", method: "POST", path: bad + "/contact-attempts", body: `{"campaignId":"rcm_1","channel":"call"}`, status: 404, message: contract.MsgCampaignNotFound},
		{name: "outcome", method: "POST", path: doc + "/contact-attempts/" + att + "/outcome", body: `{"outcome":"voicemail"}`, status: 200,
			forward: received{method: "POST", path: doc + "/contact-attempts/" + att + "/outcome", body: `{"outcome":"voicemail"}`}},
		{name: "outcome, body before the attempt", method: "POST", path: doc + "/contact-attempts/bad%20id/outcome", body: `{"outcome":"maybe"}`, status: 400, message: contract.MsgInvalidBody},
		{name: "outcome, malformed attempt", method: "POST", path: doc + "/contact-attempts/bad%20id/outcome", body: `{"outcome":"failed"}`, status: 404, message: contract.MsgAttemptNotFound},
		{name: "outcome, malformed document", method: "POST", path: bad + "/contact-attempts/" + att + "/outcome", body: `{"outcome":"failed"}`, status: 404, message: contract.MsgAttemptNotFound},
		{name: "attempts list", method: "GET", path: doc + "/contact-attempts?limit=2&cursor=att_x", status: 200,
			forward: received{method: "GET", path: doc + "/contact-attempts", query: "limit=2&cursor=att_x"}},
		{name: "clearance", method: "GET", path: doc + "/contact-clearance?channel=call&campaignId=rcm_1&at=" + future, status: 200,
			forward: received{method: "GET", path: doc + "/contact-clearance", query: url.Values{"channel": {"call"}, "campaignId": {"rcm_1"}, "at": {future}}.Encode()}},
		{name: "clearance, query before ownership", method: "GET", path: bad + "/contact-clearance?channel=fax", status: 400, message: contract.MsgInvalidQuery},
		{name: "clearance, far future", method: "GET", path: doc + "/contact-clearance?channel=sms&at=2099-01-01T00:00:00Z", status: 400, message: contract.MsgInvalidQuery},
		{name: "clearance, malformed document", method: "GET", path: bad + "/contact-clearance?channel=sms&campaignId=bad%20id", status: 404, message: contract.MsgNotFound},
		{name: "clearance, malformed campaign", method: "GET", path: doc + "/contact-clearance?channel=sms&campaignId=bad%20id", status: 404, message: contract.MsgCampaignNotFound},
		{name: "clearance, empty campaign", method: "GET", path: doc + "/contact-clearance?channel=sms&campaignId=", status: 404, message: contract.MsgCampaignNotFound},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, gw.URL+tt.path, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if tt.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if tt.key != "" {
			req.Header.Set("Idempotency-Key", tt.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || body.Error != tt.message {
			t.Errorf("%s: got %d %q, want %d %q", tt.name, resp.StatusCode, body.Error, tt.status, tt.message)
			continue
		}
		if tt.message != "" {
			select {
			case r := <-got:
				t.Errorf("%s: refused, yet forwarded %+v", tt.name, r)
			default:
			}
			continue
		}
		if r := <-got; r != tt.forward {
			t.Errorf("%s: forwarded %+v, want %+v", tt.name, r, tt.forward)
		}
	}
}

// fuzzInvalidBody: no body panics parse, and every rejection is
// "Invalid body.".
func fuzzInvalidBody[T any](f *testing.F, parseFn func(map[string]json.RawMessage) (T, error), seeds ...string) {
	for _, s := range append(seeds, `{}`, `[]`, `null`, "{\"notes\":\"\xff\"}", `{"a":`+strings.Repeat("[", 100)) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		_, err := parse(t, body, "application/json", parseFn)
		if err != nil && !errors.Is(err, httpx.ErrInvalidBody) {
			t.Fatalf("got %v, want a contract error", err)
		}
	})
}

func FuzzParseConsent(f *testing.F) {
	fuzzInvalidBody(f, ParseConsent,
		`{"channel":"sms","status":"revoked","basis":"Borrower texted STOP"}`,
		`{"channel":"all","status":"granted","basis":"\ud83d\ude00","notes":null}`, `{"channel":1,"status":"x"}`)
}

func FuzzParseAttempt(f *testing.F) {
	fuzzInvalidBody(f, ParseAttempt,
		`{"campaignId":"rcm_01k0b2z9y8x7w6v5u4t3s2r1q0","channel":"call"}`,
		`{"channel":"sms","direction":"inbound","notes":"  "}`, `{"channel":"call","direction":null}`)
}

func FuzzParseOutcome(f *testing.F) {
	fuzzInvalidBody(f, ParseOutcome, `{"outcome":"conversation"}`, `{"outcome":"failed","notes":"\ud83d"}`)
}

// FuzzParseClearance: no query panics, and every rejection is "Invalid
// query parameter.".
func FuzzParseClearance(f *testing.F) {
	for _, s := range []string{"channel=call", "channel=sms&at=2026-05-01T12:00:00Z", "at=%2B", "channel=call&at=9999-99-99T99:99:99Z", ";"} {
		f.Add(s)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		c, err := ParseClearance(q, now)
		if err != nil {
			if !errors.Is(err, httpx.ErrInvalidQuery) {
				t.Fatalf("got %v, want Invalid query parameter.", err)
			}
			return
		}
		back, err := url.ParseQuery(c.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if again, err := ParseClearance(back, now); err != nil || again != c {
			t.Fatalf("the forwarded query %q reads back as %+v, %v; want %+v", c.Encode(), again, err, c)
		}
	})
}
