package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/principal"
)

// TestServicesRefuseToStartWithoutSecret starts each service's binary
// with no RCM_INTERNAL_SECRET: each exits at once, saying why, instead of
// running with a secret everyone knows.
func TestServicesRefuseToStartWithoutSecret(t *testing.T) {
	t.Parallel()
	for _, name := range stack.Services {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(binDir, name))
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "RCM_") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			// Loopback only, and nothing that could be reached: a
			// service that does start fails its test on the timeout.
			cmd.Env = append(cmd.Env, "RCM_HTTP_ADDR=127.0.0.1:0", "RCM_KAFKA_BROKERS=127.0.0.1:1",
				"RCM_MONGODB_URI=mongodb://127.0.0.1:1/", "RCM_CLERK_JWKS_URL=http://127.0.0.1:1/jwks.json")
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("%s still running after 20s without a secret; output:\n%s", name, out)
			}
			if err == nil || !strings.Contains(string(out), "RCM_INTERNAL_SECRET is not set") {
				t.Fatalf("%s: got exit %v, output:\n%s\nwant a failed exit naming RCM_INTERNAL_SECRET", name, err, out)
			}
		})
	}
}

// TestCapturedPrincipalIsSingleUse calls the campaign service directly with
// a principal header captured from a signed start: with another body,
// another Idempotency-Key, or a second time, it is refused.
func TestCapturedPrincipalIsSingleUse(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	doc := "doc_replay_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	url := stk.URL(stack.Campaign) + "/v1/documents/" + doc + "/rcm"
	const body = `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"c"}`
	const key = "replay-key-1"
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	newRequest := func(body, key string) *http.Request {
		r, err := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Idempotency-Key", key)
		return r
	}
	signed := newRequest(body, key)
	if err := signer.Sign(signed, principal.Principal{AccountID: acct, UserID: "user_x"}); err != nil {
		t.Fatal(err)
	}
	captured := signed.Header.Get(principal.Header)
	send := func(r *http.Request) int {
		t.Helper()
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	replay := func(body, key string) int {
		t.Helper()
		r := newRequest(body, key)
		r.Header.Set(principal.Header, captured)
		return send(r)
	}
	if got := replay(`{"sms":false,"email":true,"call":false,"tone":"t","cadence":"c"}`, key); got != http.StatusForbidden {
		t.Errorf("captured header with another body: got %d, want 403", got)
	}
	if got := replay(body, "replay-key-2"); got != http.StatusForbidden {
		t.Errorf("captured header with another Idempotency-Key: got %d, want 403", got)
	}
	if got := send(signed); got != http.StatusCreated {
		t.Fatalf("the signed request: got %d, want 201", got)
	}
	if got := replay(body, key); got != http.StatusForbidden {
		t.Errorf("the same request again: got %d, want 403", got)
	}
	r := call(t, "GET", "/v1/documents/"+doc+"/rcm", token(t, acct), nil)
	if n := len(r.JSON(t)["campaigns"].([]any)); r.Status != http.StatusOK || n != 1 {
		t.Fatalf("the document's campaigns: got %d %s, want the one campaign", r.Status, r.Body)
	}
}

// TestLastEventIDBeyondHeadThroughGateway: the feed's 400 for a cursor past
// the account's newest item reaches the client as it is, and as the
// OpenAPI file describes it.
func TestLastEventIDBeyondHeadThroughGateway(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, stk.GatewayURL()+"/v1/activity/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token(t, acct))
	req.Header.Set("Last-Event-ID", "7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("got status %d and a body that did not end: %v", resp.StatusCode, err)
	}
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	r.wantError(t, http.StatusBadRequest, "Invalid Last-Event-ID.")
	checkOpenAPI(t, req, r)
}
