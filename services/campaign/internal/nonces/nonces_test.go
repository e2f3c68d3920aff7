package nonces

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/principal"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

const secret = "0123456789abcdef0123456789abcdef"

// TestStoreHoldAcrossReplicas: two replicas of a service, each with
// its own client of one store, accept a signed command once between them.
func TestStoreHoldAcrossReplicas(t *testing.T) {
	t.Parallel()
	db := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	gateway, err := principal.NewSigner(secret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var replicas []*principal.Signer
	for range 2 {
		s, err := principal.NewSigner(secret, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		s.GuardWrites(New(mongotest.Client(t).Database(db.Name()).Collection("principal_nonces"), time.Now))
		replicas = append(replicas, s)
	}
	const body = `{"campaignId":"rcm_1","channel":"sms"}`
	signed, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/v1/documents/doc_1/rcm/opt-out", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.Sign(signed, principal.Principal{AccountID: "org_1", UserID: "user_1"}); err != nil {
		t.Fatal(err)
	}
	at := func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/v1/documents/doc_1/rcm/opt-out", bytes.NewReader([]byte(body)))
		r.Header.Set(principal.Header, signed.Header.Get(principal.Header))
		return r
	}
	if _, err := replicas[0].Verify(at()); err != nil {
		t.Fatalf("first use on replica 0: got %v, want nil", err)
	}
	for i, s := range replicas {
		if _, err := s.Verify(at()); !errors.Is(err, principal.ErrReplayed) {
			t.Errorf("second use on replica %d: got %v, want %v", i, err, principal.ErrReplayed)
		}
	}
}

// TestStoreSweep: a claim that finds the sweep due removes the
// nonces minted two principal.TTLs ago and keeps the younger ones.
func TestStoreSweep(t *testing.T) {
	t.Parallel()
	coll := mongotest.Client(t).Database(mongotest.NewDatabase(t)).Collection("principal_nonces")
	now := time.Date(2026, 4, 27, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	nonceAt := func(at time.Time) string {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		s, _ := principal.NewSigner(secret, func() time.Time { return at })
		if err := s.Sign(r, principal.Principal{AccountID: "a", UserID: "u"}); err != nil {
			t.Fatal(err)
		}
		p, err := s.Verify(r)
		if err != nil {
			t.Fatal(err)
		}
		return p.Nonce
	}
	old, young := nonceAt(now.Add(-2*principal.TTL-time.Second)), nonceAt(now.Add(-2*principal.TTL+time.Second))
	ctx := context.Background()
	for _, nonce := range []string{old, young} { // seeded as claims left, no sweep due
		if _, err := coll.InsertOne(ctx, doc{ID: nonce, Expires: now}); err != nil {
			t.Fatal(err)
		}
	}
	n := New(coll, clock)
	if err := n.Claim(ctx, nonceAt(now), now.Add(principal.TTL)); err != nil {
		t.Fatal(err)
	}
	left, err := coll.CountDocuments(ctx, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if left != 2 {
		t.Fatalf("got %d nonces after the sweep, want 2 (the young one and the new one)", left)
	}
	if err := n.Claim(ctx, young, now); !errors.Is(err, principal.ErrReplayed) {
		t.Fatalf("claim of the young nonce again: got %v, want %v", err, principal.ErrReplayed)
	}
}
