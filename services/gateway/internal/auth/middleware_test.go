package auth

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

func TestMiddleware(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	jwks := newJWKSServer(t, k.published)
	v, _ := newTestVerifier(t, baseConfig(jwks))
	logger := slog.New(slog.DiscardHandler)
	api := httptest.NewServer(v.Middleware(logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := principal.From(r.Context())
		if !ok {
			http.Error(w, "no principal", http.StatusInternalServerError)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, p)
	})))
	t.Cleanup(api.Close)
	valid := mint(t, k.published, sessiontoken.Claims{Subject: "user_1", SessionID: "sess_1", OrgID: "org_1", Issuer: testIssuer, AuthorizedParty: testParty})

	tests := []struct {
		name          string
		authorization []string
		wantStatus    int
		wantError     string // the body's "error" on refusal
		wantChallenge string // WWW-Authenticate on refusal
		wantPrincipal principal.Principal
	}{
		{
			name:          "valid token",
			authorization: []string{"Bearer " + valid},
			wantStatus:    http.StatusOK,
			wantPrincipal: principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"},
		},
		{
			name:          "no header",
			wantStatus:    http.StatusUnauthorized,
			wantError:     contract.MsgMissingToken,
			wantChallenge: "Bearer",
		},
		{
			name:          "not bearer",
			authorization: []string{"Basic dXNlcjpwYXNz"},
			wantStatus:    http.StatusUnauthorized,
			wantError:     contract.MsgMissingToken,
			wantChallenge: "Bearer",
		},
		{
			name:          "two Authorization headers",
			authorization: []string{"Bearer " + valid, "Bearer " + valid},
			wantStatus:    http.StatusUnauthorized,
			wantError:     contract.MsgMissingToken,
			wantChallenge: "Bearer",
		},
		{
			name:          "invalid token",
			authorization: []string{"Bearer " + valid[:len(valid)-4]},
			wantStatus:    http.StatusUnauthorized,
			wantError:     contract.MsgInvalidToken,
			wantChallenge: `Bearer error="invalid_token"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, api.URL+"/v1/activity", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range tc.authorization {
				req.Header.Add("Authorization", a)
			}
			resp, err := api.Client().Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("got status %d (%s), want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if tc.wantStatus == http.StatusOK {
				var got principal.Principal
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("decode principal %s: %v", body, err)
				}
				if got != tc.wantPrincipal {
					t.Errorf("got principal %+v, want %+v", got, tc.wantPrincipal)
				}
				return
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode error body %s: %v", body, err)
			}
			if len(got) != 1 || got["error"] != tc.wantError {
				t.Errorf("got body %s, want exactly {\"error\": %q}", body, tc.wantError)
			}
			if c := resp.Header.Get("WWW-Authenticate"); c != tc.wantChallenge {
				t.Errorf("got WWW-Authenticate %q, want %q", c, tc.wantChallenge)
			}
		})
	}
}

// TestSessionCookie: without an Authorization header, Clerk's __session
// cookie authenticates a safe request (GET, HEAD) exactly as the header
// would, with the same 401s; a POST with only the cookie is refused as one
// without any token, so a cross-site form never acts for a signed-in
// user; a header, when sent, is the one verified.
func TestSessionCookie(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	jwks := newJWKSServer(t, k.published)
	v, _ := newTestVerifier(t, baseConfig(jwks))
	logger := slog.New(slog.DiscardHandler)
	api := httptest.NewServer(v.Middleware(logger)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := principal.From(r.Context())
		httpx.WriteJSON(w, http.StatusOK, p)
	})))
	t.Cleanup(api.Close)
	valid := mint(t, k.published, sessiontoken.Claims{Subject: "user_1", SessionID: "sess_1", Issuer: testIssuer, AuthorizedParty: testParty})
	other := mint(t, k.published, sessiontoken.Claims{Subject: "user_2", SessionID: "sess_2", Issuer: testIssuer, AuthorizedParty: testParty})
	user1 := principal.Principal{AccountID: "user_1", UserID: "user_1", SessionID: "sess_1"}
	user2 := principal.Principal{AccountID: "user_2", UserID: "user_2", SessionID: "sess_2"}

	tests := []struct {
		name          string
		method        string
		cookies       []string
		authorization string
		wantStatus    int
		wantError     string
		wantPrincipal principal.Principal
	}{
		{name: "GET with the cookie", method: "GET", cookies: []string{valid}, wantStatus: 200, wantPrincipal: user1},
		{name: "HEAD with the cookie", method: "HEAD", cookies: []string{valid}, wantStatus: 200},
		{name: "GET with an invalid cookie", method: "GET", cookies: []string{valid[:len(valid)-4]}, wantStatus: 401, wantError: contract.MsgInvalidToken},
		{name: "GET with an empty cookie", method: "GET", cookies: []string{""}, wantStatus: 401, wantError: contract.MsgMissingToken},
		{name: "GET with two cookies", method: "GET", cookies: []string{valid, valid}, wantStatus: 401, wantError: contract.MsgMissingToken},
		{name: "POST with only the cookie", method: "POST", cookies: []string{valid}, wantStatus: 401, wantError: contract.MsgMissingToken},
		{name: "POST with the header and the cookie", method: "POST", cookies: []string{other}, authorization: "Bearer " + valid, wantStatus: 200, wantPrincipal: user1},
		{name: "GET: the header wins over the cookie", method: "GET", cookies: []string{valid}, authorization: "Bearer " + other, wantStatus: 200, wantPrincipal: user2},
		{name: "GET: an invalid header is not saved by the cookie", method: "GET", cookies: []string{valid}, authorization: "Bearer " + other[:len(other)-4], wantStatus: 401, wantError: contract.MsgInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tc.method, api.URL+"/v1/activity", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.cookies {
				req.Header.Add("Cookie", (&http.Cookie{Name: SessionCookie, Value: c}).String())
			}
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			resp, err := api.Client().Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("got status %d (%s), want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if tc.method == "HEAD" {
				return
			}
			if tc.wantStatus == http.StatusOK {
				var got principal.Principal
				if err := json.Unmarshal(body, &got); err != nil || got != tc.wantPrincipal {
					t.Errorf("got principal %s (%v), want %+v", body, err, tc.wantPrincipal)
				}
				return
			}
			if want := `{"error":"` + tc.wantError + `"}`; string(bytes.TrimSpace(body)) != want {
				t.Errorf("got body %s, want %s", body, want)
			}
		})
	}
}

// TestTicketMiddleware: on the stream, a ticket in the query authenticates
// by itself as the principal it was minted for, and names its id to the
// handler; with an Authorization header beside it, both must verify and
// name the same account and user. A forged ticket, two tickets or another
// account's ticket get the contract's 401; without a ticket, the header
// or the cookie authenticate as on every read.
func TestTicketMiddleware(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	jwks := newJWKSServer(t, k.published)
	v, _ := newTestVerifier(t, baseConfig(jwks))
	tickets, err := NewTickets(testSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	type seen struct {
		Principal principal.Principal
		Ticket    string
	}
	api := httptest.NewServer(v.TicketMiddleware(logger, tickets)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := principal.From(r.Context())
		id, _ := TicketFrom(r.Context())
		httpx.WriteJSON(w, http.StatusOK, seen{p, id})
	})))
	t.Cleanup(api.Close)
	user1 := principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"}
	tok1 := mint(t, k.published, sessiontoken.Claims{Subject: "user_1", SessionID: "sess_9", OrgID: "org_1", Issuer: testIssuer, AuthorizedParty: testParty})
	tok2 := mint(t, k.published, sessiontoken.Claims{Subject: "user_2", SessionID: "sess_2", Issuer: testIssuer, AuthorizedParty: testParty})
	tk, err := tickets.Mint(user1)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := NewTickets(strings.Repeat("f", 40), time.Now)
	forgedTk, _ := forged.Mint(user1)

	tests := []struct {
		name          string
		query         string
		authorization string
		cookie        string
		wantStatus    int
		wantError     string
		want          seen
	}{
		{name: "ticket alone", query: "?ticket=" + tk.Value, wantStatus: 200, want: seen{user1, tk.ID}},
		{name: "ticket and its user's header", query: "?ticket=" + tk.Value, authorization: "Bearer " + tok1, wantStatus: 200, want: seen{user1, tk.ID}},
		{name: "ticket and another cookie", query: "?ticket=" + tk.Value, cookie: tok2, wantStatus: 200, want: seen{user1, tk.ID}},
		{name: "another account's ticket", query: "?ticket=" + tk.Value, authorization: "Bearer " + tok2, wantStatus: 401, wantError: contract.MsgInvalidToken},
		{name: "ticket and an invalid header", query: "?ticket=" + tk.Value, authorization: "Bearer " + tok1[:len(tok1)-4], wantStatus: 401, wantError: contract.MsgInvalidToken},
		{name: "forged ticket", query: "?ticket=" + forgedTk.Value, wantStatus: 401, wantError: contract.MsgInvalidToken},
		{name: "empty ticket", query: "?ticket=", wantStatus: 401, wantError: contract.MsgInvalidToken},
		{name: "two tickets", query: "?ticket=" + tk.Value + "&ticket=" + tk.Value, wantStatus: 401, wantError: contract.MsgInvalidToken},
		{name: "no ticket, a header", query: "?lastEventId=3", authorization: "Bearer " + tok2, wantStatus: 200,
			want: seen{Principal: principal.Principal{AccountID: "user_2", UserID: "user_2", SessionID: "sess_2"}}},
		{name: "no ticket, a cookie", cookie: tok2, wantStatus: 200,
			want: seen{Principal: principal.Principal{AccountID: "user_2", UserID: "user_2", SessionID: "sess_2"}}},
		{name: "nothing", wantStatus: 401, wantError: contract.MsgMissingToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, api.URL+"/v1/activity/stream"+tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			if tc.cookie != "" {
				req.AddCookie(&http.Cookie{Name: SessionCookie, Value: tc.cookie})
			}
			resp, err := api.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if tc.wantStatus != http.StatusOK {
				if want := `{"error":"` + tc.wantError + `"}`; string(bytes.TrimSpace(body)) != want {
					t.Errorf("got body %s, want %s", body, want)
				}
				return
			}
			var got seen
			if err := json.Unmarshal(body, &got); err != nil || got != tc.want {
				t.Errorf("got %s (%v), want %+v", body, err, tc.want)
			}
		})
	}
}
