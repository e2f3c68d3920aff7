package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/devjwks"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// TestRunDrainsOnStop starts run as main does, in front of a campaign
// service whose answer is held back, and stops the gateway as SIGTERM does
// while the request waits: the gateway stops accepting at once, the
// request in flight still gets its answer, and run then returns.
func TestRunDrainsOnStop(t *testing.T) {
	t.Parallel()
	jwks, err := devjwks.Start(context.Background(), devjwks.Config{Addr: "127.0.0.1:0", KeyPath: filepath.Join(t.TempDir(), "key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwks.Close)
	entered, release := make(chan struct{}), make(chan struct{})
	campaign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"campaigns":[]}`))
	}))
	t.Cleanup(campaign.Close)
	inst := servicetest.Start(t, "gateway", run, map[string]string{
		"RCM_HTTP_ADDR":       "127.0.0.1:0",
		"RCM_CLERK_JWKS_URL":  jwks.JWKSURL(),
		"RCM_CLERK_ISSUER":    jwks.Issuer(),
		"RCM_INTERNAL_SECRET": principal.DevSecret,
		"RCM_CAMPAIGN_URL":    campaign.URL,
		"RCM_DRAIN_TIMEOUT":   "5s",
	})
	tok, err := jwks.Mint(sessiontoken.Claims{Subject: "user_a", SessionID: "sess_1", Issuer: jwks.Issuer(), IssuedAt: time.Now(), TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	status := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, inst.URL+"/v1/documents/doc_1/rcm", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	select {
	case <-entered:
	case got := <-status:
		t.Fatalf("the request was answered %d before reaching the campaign service", got)
	}
	stopped := make(chan struct{})
	go func() { inst.Stop(); close(stopped) }()
	servicetest.Eventually(t, 10*time.Second, "the listener to close", func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(inst.URL, "http://"))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case <-stopped:
		t.Fatal("run returned while a request was in flight")
	default:
	}
	close(release)
	if got := <-status; got != http.StatusOK {
		t.Fatalf("the request in flight: got %d, want 200", got)
	}
	<-stopped
	if msgs := inst.Logs.Messages(); msgs[len(msgs)-1] != "gateway stopped" {
		t.Fatalf("last log line %q, want %q", msgs[len(msgs)-1], "gateway stopped")
	}
}
