package principal

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/mongotest"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

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

// TestStoreNoncesHoldAcrossReplicas: two replicas of a service, each with
// its own client of one store, accept a signed command once between them.
func TestStoreNoncesHoldAcrossReplicas(t *testing.T) {
	t.Parallel()
	db := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	gateway, err := NewSigner(secret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var replicas []*Signer
	for range 2 {
		s, err := NewSigner(secret, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		s.GuardWrites(NewStoreNonces(mongotest.Client(t).Database(db.Name()).Collection("principal_nonces"), time.Now))
		replicas = append(replicas, s)
	}
	const body = `{"campaignId":"rcm_1","channel":"sms"}`
	signed, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/documents/doc_1/rcm/opt-out", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.Sign(signed, Principal{AccountID: "org_1", UserID: "user_1"}); err != nil {
		t.Fatal(err)
	}
	at := func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/v1/documents/doc_1/rcm/opt-out", bytes.NewReader([]byte(body)))
		r.Header.Set(Header, signed.Header.Get(Header))
		return r
	}
	if _, err := replicas[0].Verify(at()); err != nil {
		t.Fatalf("first use on replica 0: got %v, want nil", err)
	}
	for i, s := range replicas {
		if _, err := s.Verify(at()); !errors.Is(err, ErrReplayed) {
			t.Errorf("second use on replica %d: got %v, want %v", i, err, ErrReplayed)
		}
	}
}

// TestStoreNoncesSweep: a claim that finds the sweep due removes the
// nonces minted two TTLs ago and keeps the younger ones.
func TestStoreNoncesSweep(t *testing.T) {
	t.Parallel()
	coll := mongotest.Client(t).Database(mongotest.NewDatabase(t)).Collection("principal_nonces")
	now := time.Date(2026, 4, 27, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	nonceAt := func(at time.Time) string {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		s, _ := NewSigner(secret, func() time.Time { return at })
		if err := s.Sign(r, Principal{AccountID: "a", UserID: "u"}); err != nil {
			t.Fatal(err)
		}
		p, err := s.Verify(r)
		if err != nil {
			t.Fatal(err)
		}
		return p.Nonce
	}
	old, young := nonceAt(now.Add(-2*TTL-time.Second)), nonceAt(now.Add(-2*TTL+time.Second))
	ctx := context.Background()
	n := NewStoreNonces(coll, clock)
	n.sweepAt.Store(now.Add(time.Hour).UnixNano()) // not due while seeding
	for _, nonce := range []string{old, young} {
		if err := n.Claim(ctx, nonce, now); err != nil {
			t.Fatal(err)
		}
	}
	n.sweepAt.Store(0)
	if err := n.Claim(ctx, nonceAt(now), now.Add(TTL)); err != nil {
		t.Fatal(err)
	}
	left, err := coll.CountDocuments(ctx, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if left != 2 {
		t.Fatalf("got %d nonces after the sweep, want 2 (the young one and the new one)", left)
	}
	if err := n.Claim(ctx, young, now); !errors.Is(err, ErrReplayed) {
		t.Fatalf("claim of the young nonce again: got %v, want %v", err, ErrReplayed)
	}
}
