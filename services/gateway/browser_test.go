package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/dev/devjwks"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
	"github.com/rcm-platform/rcm/services/gateway/internal/api"
	"github.com/rcm-platform/rcm/services/gateway/internal/browser"
)

const (
	pageOrigin  = "http://127.0.0.1:5173"
	otherOrigin = "http://evil.example"
)

// testGateway is a gateway started as main starts it, with a real JWKS
// endpoint and an upstream that answers every request of every service.
type testGateway struct {
	*servicetest.Instance
	jwks *devjwks.Server
	// upstream records the last request it received.
	upstream chan *http.Request
}

// startGateway starts a gateway whose campaign, compliance and feed URLs
// are one stub answering 200 {} (and an open event stream for the stream),
// with vars added to its environment.
func startGateway(t *testing.T, vars map[string]string) *testGateway {
	t.Helper()
	jwks, err := devjwks.Start(context.Background(), devjwks.Config{Addr: "127.0.0.1:0", KeyPath: filepath.Join(t.TempDir(), "key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwks.Close)
	seen := make(chan *http.Request, 64)
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Clone(context.Background()):
		default:
		}
		if r.URL.Path == "/v1/activity/stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, ": open\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	t.Cleanup(stub.Close)
	env := map[string]string{
		"RCM_HTTP_ADDR":       "127.0.0.1:0",
		"RCM_CLERK_JWKS_URL":  jwks.JWKSURL(),
		"RCM_CLERK_ISSUER":    jwks.Issuer(),
		"RCM_INTERNAL_SECRET": principal.DevSecret,
		"RCM_CAMPAIGN_URL":    stub.URL,
		"RCM_COMPLIANCE_URL":  stub.URL,
		"RCM_FEED_URL":        stub.URL,
	}
	maps.Copy(env, vars)
	return &testGateway{Instance: servicetest.Start(t, "gateway", run, env), jwks: jwks, upstream: seen}
}

// token mints a session token of user (personal account) with azp party.
func (g *testGateway) token(t *testing.T, user, party string) string {
	t.Helper()
	tok, err := g.jwks.Mint(sessiontoken.Claims{Subject: user, SessionID: "sess_" + user, Issuer: g.jwks.Issuer(),
		AuthorizedParty: party, IssuedAt: time.Now(), TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// do sends method path with the headers hdr (name, value, name, value…).
func (g *testGateway) do(t *testing.T, method, path string, body io.Reader, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, g.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// corsHeaders returns the response's Access-Control-* headers.
func corsHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out[k] = v
		}
	}
	return out
}

// TestCORS: a page of a listed origin may read every answer, the 401s
// included, and the headers the gateway sends on them; a page of any
// other origin gets no CORS header, on an actual request or a preflight.
// Without RCM_CORS_ORIGINS the authorized parties are the origins; with
// neither, no origin gets any.
func TestCORS(t *testing.T) {
	t.Parallel()
	g := startGateway(t, map[string]string{"RCM_CORS_ORIGINS": pageOrigin + ", http://localhost:5173"})
	tok := g.token(t, "user_cors", "")

	t.Run("listed origin", func(t *testing.T) {
		resp, body := g.do(t, "GET", "/v1/activity", nil, "Origin", pageOrigin, "Authorization", "Bearer "+tok)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s, want 200", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != pageOrigin {
			t.Errorf("Access-Control-Allow-Origin: got %q, want %q", got, pageOrigin)
		}
		if got := resp.Header.Get("Access-Control-Allow-Credentials"); got != "true" {
			t.Errorf("Access-Control-Allow-Credentials: got %q, want true", got)
		}
		if !slices.Contains(resp.Header.Values("Vary"), "Origin") {
			t.Errorf("Vary: got %q, want Origin among them", resp.Header.Values("Vary"))
		}
		exposed := strings.Split(resp.Header.Get("Access-Control-Expose-Headers"), ",")
		for i := range exposed {
			exposed[i] = http.CanonicalHeaderKey(strings.TrimSpace(exposed[i]))
		}
		want := []string{"X-Request-Id", "Retry-After", "Idempotent-Replayed"}
		// Every rate-limit header the gateway sent must be readable.
		for k := range resp.Header {
			if strings.HasPrefix(k, "X-Ratelimit-") {
				want = append(want, k)
			}
		}
		if len(want) < 6 {
			t.Errorf("the answer carries the rate-limit headers %v, want limit, remaining and reset", want[3:])
		}
		for _, h := range want {
			if !slices.Contains(exposed, h) {
				t.Errorf("Access-Control-Expose-Headers %q lacks %s", exposed, h)
			}
		}
	})
	t.Run("listed origin, refused token", func(t *testing.T) {
		resp, body := g.do(t, "GET", "/v1/activity", nil, "Origin", "http://localhost:5173")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("got %d %s, want 401", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "http://localhost:5173" {
			t.Errorf("Access-Control-Allow-Origin: got %q, want the origin, so that the page reads the 401", got)
		}
	})
	t.Run("other origin", func(t *testing.T) {
		resp, _ := g.do(t, "GET", "/v1/activity", nil, "Origin", otherOrigin, "Authorization", "Bearer "+tok)
		if got := corsHeaders(resp.Header); len(got) != 0 {
			t.Errorf("got CORS headers %v, want none", got)
		}
		resp, _ = g.do(t, "OPTIONS", "/v1/activity", nil, "Origin", otherOrigin, "Access-Control-Request-Method", "GET",
			"Access-Control-Request-Headers", "authorization")
		if got := corsHeaders(resp.Header); len(got) != 0 {
			t.Errorf("preflight: got CORS headers %v, want none", got)
		}
		// Nothing is answered for an origin off the list: an OPTIONS from it
		// is what it is without a policy, a method no route has.
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("preflight: got %d, want 405 as for any OPTIONS", resp.StatusCode)
		}
	})
	t.Run("header not allowed", func(t *testing.T) {
		resp, _ := g.do(t, "OPTIONS", "/v1/activity", nil, "Origin", pageOrigin, "Access-Control-Request-Method", "GET",
			"Access-Control-Request-Headers", "authorization,x-rcm-principal")
		if got := corsHeaders(resp.Header); len(got) != 0 {
			t.Errorf("preflight asking for x-rcm-principal: got CORS headers %v, want none", got)
		}
	})

	t.Run("authorized parties by default", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, map[string]string{"RCM_CLERK_AUTHORIZED_PARTIES": "https://app.example.com"})
		resp, _ := g.do(t, "OPTIONS", "/v1/activity", nil, "Origin", "https://app.example.com", "Access-Control-Request-Method", "GET")
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example.com" {
			t.Errorf("Access-Control-Allow-Origin: got %q, want the authorized party", got)
		}
		resp, _ = g.do(t, "OPTIONS", "/v1/activity", nil, "Origin", pageOrigin, "Access-Control-Request-Method", "GET")
		if got := corsHeaders(resp.Header); len(got) != 0 {
			t.Errorf("an origin that is no authorized party: got CORS headers %v, want none", got)
		}
	})
	t.Run("no origins", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, nil)
		resp, _ := g.do(t, "OPTIONS", "/v1/activity", nil, "Origin", pageOrigin, "Access-Control-Request-Method", "GET")
		if got := corsHeaders(resp.Header); len(got) != 0 {
			t.Errorf("got CORS headers %v, want none when no origin is configured", got)
		}
	})
}

// publicRoutes returns the method and pattern of every route mount puts on
// the router.
func publicRoutes(t *testing.T) [][2]string {
	t.Helper()
	r := chi.NewRouter()
	pass := func(next http.Handler) http.Handler { return next }
	mount(r, pass, pass, pass, &api.Handler{})
	var routes [][2]string
	err := chi.Walk(r, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, [2]string{method, route})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return routes
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// TestPreflightOfEveryRoute sends a page's preflight for every public
// route, as a browser does before the call with the headers that route
// reads: each is allowed, for the listed origin, cached for MaxAge.
func TestPreflightOfEveryRoute(t *testing.T) {
	t.Parallel()
	g := startGateway(t, map[string]string{"RCM_CORS_ORIGINS": pageOrigin})
	routes := publicRoutes(t)
	if !slices.Contains(routes, [2]string{"GET", "/v1/activity/stream"}) || !slices.Contains(routes, [2]string{"POST", "/v1/documents/{documentID}/rcm"}) {
		t.Fatalf("the walk found %v, want the stream and the start among them", routes)
	}
	for _, rt := range routes {
		method, path := rt[0], pathParam.ReplaceAllString(rt[1], "x1")
		headers := "authorization,last-event-id"
		if method == http.MethodPost {
			headers = "authorization,content-type,idempotency-key"
		}
		resp, body := g.do(t, "OPTIONS", path, nil, "Origin", pageOrigin,
			"Access-Control-Request-Method", method, "Access-Control-Request-Headers", headers)
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("%s %s: got %d %s, want 204", method, rt[1], resp.StatusCode, body)
			continue
		}
		want := http.Header{
			"Access-Control-Allow-Origin":      {pageOrigin},
			"Access-Control-Allow-Methods":     {method},
			"Access-Control-Allow-Headers":     {headers},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Max-Age":           {"600"},
		}
		if got := corsHeaders(resp.Header); !maps.EqualFunc(got, want, slices.Equal) {
			t.Errorf("%s %s: got %v, want %v", method, rt[1], got, want)
		}
		if resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s %s: the preflight's answer has no X-Request-Id", method, rt[1])
		}
	}
	if browser.MaxAge != 600 {
		t.Fatalf("MaxAge is %d, the test expects 600", browser.MaxAge)
	}
}

// TestSessionCookieOnEveryRoute: every read route, the stream included,
// takes Clerk's __session cookie when no Authorization header is sent;
// every command refuses it with the 401 of a request without a token,
// also from a listed origin.
func TestSessionCookieOnEveryRoute(t *testing.T) {
	t.Parallel()
	g := startGateway(t, map[string]string{"RCM_CORS_ORIGINS": pageOrigin})
	cookie := (&http.Cookie{Name: "__session", Value: g.token(t, "user_cookie", "")}).String()
	for _, rt := range publicRoutes(t) {
		method, path := rt[0], pathParam.ReplaceAllString(rt[1], "x1")
		if strings.Contains(rt[1], "contact-clearance") {
			path += "?channel=sms&campaignId=rcm_x"
		}
		resp, body := g.do(t, method, path, strings.NewReader(`{}`), "Origin", pageOrigin, "Cookie", cookie, "Content-Type", "application/json")
		switch method {
		case http.MethodGet:
			if resp.StatusCode == http.StatusUnauthorized {
				t.Errorf("GET %s with the cookie: got 401 %s, want it authenticated", rt[1], body)
			}
		default:
			if want := `{"error":"Missing Authorization Bearer token."}`; resp.StatusCode != http.StatusUnauthorized || strings.TrimSpace(body) != want {
				t.Errorf("%s %s with only the cookie: got %d %s, want 401 %s", method, rt[1], resp.StatusCode, body, want)
			}
		}
	}
}

// TestStreamTickets: a Bearer POST mints a ticket valid for a minute, as
// the OpenAPI file describes it, within the rate limit; the ticket alone
// opens the stream, and the feed gets its id (to record its one use), not
// the ticket; a forged ticket, or one beside another account's token, is
// refused with the 401s; a POST with the cookie only, or with a malformed
// Idempotency-Key, mints nothing.
func TestStreamTickets(t *testing.T) {
	t.Parallel()
	g := startGateway(t, map[string]string{"RCM_CORS_ORIGINS": pageOrigin})
	tok := g.token(t, "user_tk", "")
	before := time.Now()
	resp, body := g.do(t, "POST", "/v1/activity/stream-tickets", nil, "Authorization", "Bearer "+tok, "Origin", pageOrigin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mint: got %d %s, want 201", resp.StatusCode, body)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(body), &got); err != nil || len(got) != 2 || got["ticket"] == "" {
		t.Fatalf("mint: got %s (%v), want {\"ticket\", \"expiresAt\"}", body, err)
	}
	exp, err := time.Parse("2006-01-02T15:04:05.000Z", got["expiresAt"])
	if err != nil || exp.Before(before.Add(59*time.Second)) || exp.After(time.Now().Add(61*time.Second)) {
		t.Errorf("expiresAt %q (%v): want RFC 3339 UTC with milliseconds, a minute from now", got["expiresAt"], err)
	}
	if resp.Header.Get("X-Ratelimit-Remaining") == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("mint: headers %v, want the rate limit's and Cache-Control: no-store", resp.Header)
	}
	if a := resp.Header.Get("Access-Control-Allow-Origin"); a != pageOrigin {
		t.Errorf("mint from the page: Access-Control-Allow-Origin %q, want %q", a, pageOrigin)
	}

	resp, body = g.do(t, "GET", "/v1/activity/stream?lastEventId=5&ticket="+url.QueryEscape(got["ticket"]), nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream with the ticket: got %d %s %s, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var fwd *http.Request
	for fwd == nil {
		if r := <-g.upstream; r.URL.Path == "/v1/activity/stream" {
			fwd = r
		}
	}
	q := fwd.URL.Query()
	if id := q.Get("ticket"); len(id) != 26 || strings.Contains(fwd.URL.RawQuery, got["ticket"]) || q.Get("lastEventId") != "5" {
		t.Errorf("the feed got query %q, want the ticket's id (26 characters) instead of the ticket, and lastEventId=5", fwd.URL.RawQuery)
	}

	other := g.token(t, "user_other", "")
	for name, hdr := range map[string][]string{
		"forged":                 {"", "ticket=" + url.QueryEscape(got["ticket"][:len(got["ticket"])-2]+"AA")},
		"beside another's token": {"Bearer " + other, "ticket=" + url.QueryEscape(got["ticket"])},
	} {
		h := []string{}
		if hdr[0] != "" {
			h = append(h, "Authorization", hdr[0])
		}
		resp, body := g.do(t, "GET", "/v1/activity/stream?"+hdr[1], nil, h...)
		if want := `{"error":"Invalid or expired token."}`; resp.StatusCode != http.StatusUnauthorized || strings.TrimSpace(body) != want {
			t.Errorf("%s ticket: got %d %s, want 401 %s", name, resp.StatusCode, body, want)
		}
	}

	cookie := (&http.Cookie{Name: "__session", Value: tok}).String()
	resp, body = g.do(t, "POST", "/v1/activity/stream-tickets", nil, "Cookie", cookie)
	if want := `{"error":"Missing Authorization Bearer token."}`; resp.StatusCode != http.StatusUnauthorized || strings.TrimSpace(body) != want {
		t.Errorf("mint with the cookie only: got %d %s, want 401 %s", resp.StatusCode, body, want)
	}
	resp, body = g.do(t, "POST", "/v1/activity/stream-tickets", nil, "Authorization", "Bearer "+tok, "Idempotency-Key", "")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Invalid Idempotency-Key header.") {
		t.Errorf("mint with an empty Idempotency-Key: got %d %s, want 400 Invalid Idempotency-Key header.", resp.StatusCode, body)
	}
}

// TestStreamTicketsShareTheRateLimit: minting tickets spends the
// account's budget like any request, and so does the stream it opens.
func TestStreamTicketsShareTheRateLimit(t *testing.T) {
	t.Parallel()
	g := startGateway(t, map[string]string{"RCM_RATE_LIMIT": "2", "RCM_RATE_WINDOW": "1h"})
	tok := g.token(t, "user_rl", "")
	resp, body := g.do(t, "POST", "/v1/activity/stream-tickets", nil, "Authorization", "Bearer "+tok)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("first mint: got %d %s", resp.StatusCode, body)
	}
	var tk map[string]string
	_ = json.Unmarshal([]byte(body), &tk)
	if resp, body := g.do(t, "GET", "/v1/activity/stream?ticket="+url.QueryEscape(tk["ticket"]), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("the stream: got %d %s", resp.StatusCode, body)
	}
	resp, body = g.do(t, "POST", "/v1/activity/stream-tickets", nil, "Authorization", "Bearer "+tok)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third request: got %d %s, want 429 with Retry-After", resp.StatusCode, body)
	}
}
