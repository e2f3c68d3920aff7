package principal

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestCapturedHeaderIsSingleUse sends a signed command over a real socket
// and then what someone who captured its principal header on the internal
// network could send with it: another body, another Idempotency-Key, the
// same request again. Only the request as signed, once, is accepted.
func TestCapturedHeaderIsSingleUse(t *testing.T) {
	t.Parallel()
	s, err := NewSigner(secret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	s.GuardWrites(NewMemoryNonces(time.Now))
	var mu sync.Mutex
	var accepted [][]byte
	srv := httptest.NewServer(s.Require(discard)(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			accepted = append(accepted, body)
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		})))
	t.Cleanup(srv.Close)

	const url, body, key = "/v1/documents/doc_1/rcm/opt-out", `{"campaignId":"rcm_1","channel":"sms"}`, "key-1"
	newRequest := func(body, key string) *http.Request {
		r, err := http.NewRequest(http.MethodPost, srv.URL+url, bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		if key != "" {
			r.Header.Set("Idempotency-Key", key)
		}
		return r
	}
	signed := newRequest(body, key)
	if err := s.Sign(signed, Principal{AccountID: "org_1", UserID: "user_1"}); err != nil {
		t.Fatal(err)
	}
	captured := signed.Header.Get(Header)
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
		r.Header.Set(Header, captured)
		return send(r)
	}

	// Before the signed request arrives, and after.
	if got := replay(`{"campaignId":"rcm_1","channel":"all"}`, key); got != http.StatusForbidden {
		t.Errorf("captured header with another body: got %d, want 403", got)
	}
	if got := replay(body, "key-2"); got != http.StatusForbidden {
		t.Errorf("captured header with another Idempotency-Key: got %d, want 403", got)
	}
	if got := replay(body, ""); got != http.StatusForbidden {
		t.Errorf("captured header without its Idempotency-Key: got %d, want 403", got)
	}
	if got := send(signed); got != http.StatusNoContent {
		t.Fatalf("the signed request: got %d, want 204", got)
	}
	if got := replay(body, key); got != http.StatusForbidden {
		t.Errorf("the same request again: got %d, want 403", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(accepted) != 1 || string(accepted[0]) != body {
		t.Errorf("the handler ran for bodies %q, want once for %q", accepted, body)
	}
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))
