package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/devjwks"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// TestTransparencyRoutesForwarded: the checkpoint, proof, consistency
// and verifier key routes reach the compliance service with their path
// and query, and its text/plain answers come back as they are, with
// their content type.
func TestTransparencyRoutesForwarded(t *testing.T) {
	t.Parallel()
	jwks, err := devjwks.Start(context.Background(), devjwks.Config{Addr: "127.0.0.1:0", KeyPath: filepath.Join(t.TempDir(), "key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwks.Close)
	compliance := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "got "+r.URL.RequestURI()+"\n— log sig\n")
	}))
	t.Cleanup(compliance.Close)
	inst := servicetest.Start(t, "gateway", run, map[string]string{
		"RCM_HTTP_ADDR":       "127.0.0.1:0",
		"RCM_CLERK_JWKS_URL":  jwks.JWKSURL(),
		"RCM_CLERK_ISSUER":    jwks.Issuer(),
		"RCM_INTERNAL_SECRET": principal.DevSecret,
		"RCM_COMPLIANCE_URL":  compliance.URL,
	})
	tok, err := jwks.Mint(sessiontoken.Claims{Subject: "user_a", SessionID: "sess_1", Issuer: jwks.Issuer(), IssuedAt: time.Now(), TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"/v1/compliance-log/checkpoint",
		"/v1/compliance-log/entries/7/proof?size=9",
		"/v1/compliance-log/consistency?from=3&to=9",
		"/v1/compliance-log/verifier-key",
		"/v1/compliance-log/verify?checkpoint=cmNt",
	} {
		req, _ := http.NewRequest(http.MethodGet, inst.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "got " + path + "\n— log sig\n"; resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("%s: got %d %q, want 200 %q", path, resp.StatusCode, body, want)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("%s: content type %q, want text/plain; charset=utf-8", path, ct)
		}
	}
}
