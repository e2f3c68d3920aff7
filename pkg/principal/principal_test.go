package principal

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const secret = "0123456789abcdef0123456789abcdef"

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 27, 10, 0, 0, 0, time.UTC)
	s, err := NewSigner(secret, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	s.GuardWrites(NewMemoryNonces(time.Now))
	bare, _ := NewSigner(secret, func() time.Time { return now })
	other, _ := NewSigner("ffffffffffffffffffffffffffffffff", func() time.Time { return now })
	later, _ := NewSigner(secret, func() time.Time { return now.Add(TTL + time.Second) })
	p := Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"}

	signed := func(method, url string) *http.Request {
		r := httptest.NewRequest(method, url, nil)
		if err := s.Sign(r, p); err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name     string
		req      func() *http.Request
		verifier *Signer
		want     error
	}{
		{"valid", func() *http.Request { return signed("POST", "/v1/documents/doc_1/rcm") }, s, nil},
		{"missing", func() *http.Request { return httptest.NewRequest("POST", "/v1/x", nil) }, s, ErrMissing},
		{"forged by client", func() *http.Request {
			r := httptest.NewRequest("POST", "/v1/x", nil)
			r.Header.Set(Header, `v2.eyJhY2N0Ijoib3JnXzEiLCJzdWIiOiJ1c2VyXzEiLCJleHAiOjk5OTk5OTk5OTl9.AAAA`)
			return r
		}, s, ErrSignature},
		{"other secret", func() *http.Request { return signed("POST", "/v1/x") }, other, ErrSignature},
		{"replayed on another path", func() *http.Request {
			r := signed("POST", "/v1/documents/doc_1/rcm")
			r2 := httptest.NewRequest("POST", "/v1/documents/doc_2/rcm", nil)
			r2.Header.Set(Header, r.Header.Get(Header))
			return r2
		}, s, ErrSignature},
		{"replayed with another method", func() *http.Request {
			r := signed("GET", "/v1/x")
			r2 := httptest.NewRequest("POST", "/v1/x", nil)
			r2.Header.Set(Header, r.Header.Get(Header))
			return r2
		}, s, ErrSignature},
		{"replayed with another query", func() *http.Request {
			r := signed("GET", "/v1/x?documentId=a")
			r2 := httptest.NewRequest("GET", "/v1/x?documentId=b", nil)
			r2.Header.Set(Header, r.Header.Get(Header))
			return r2
		}, s, ErrSignature},
		{"expired", func() *http.Request { return signed("GET", "/v1/x") }, later, ErrExpired},
		{"a read replayed", func() *http.Request {
			r := signed("GET", "/v1/x")
			if _, err := s.Verify(r); err != nil {
				t.Fatal(err)
			}
			return r
		}, s, ErrReplayed},
		{"a command where no guard holds its nonces", func() *http.Request { return signed("POST", "/v1/x") }, bare, ErrNoGuard},
		{"the previous format", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/x", nil)
			r.Header.Set(Header, `v1.eyJhY2N0Ijoib3JnXzEiLCJzdWIiOiJ1c2VyXzEiLCJleHAiOjk5OTk5OTk5OTl9.AAAA`)
			return r
		}, s, ErrMalformed},
		{"garbage", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/x", nil)
			r.Header.Set(Header, "not-a-principal")
			return r
		}, s, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.verifier.Verify(tt.req())
			if !errors.Is(err, tt.want) {
				t.Fatalf("got err %v, want %v", err, tt.want)
			}
			if tt.want == nil && got.AccountID != p.AccountID {
				t.Fatalf("got account %q, want %q", got.AccountID, p.AccountID)
			}
		})
	}
}

func TestNewSignerRefusesShortSecret(t *testing.T) {
	t.Parallel()
	if _, err := NewSigner("short", time.Now); err == nil {
		t.Fatal("got nil error for a 5-byte secret, want an error")
	}
}

func TestForServiceRefusesNoSecret(t *testing.T) {
	t.Parallel()
	_, err := ForService("", discard)
	if err == nil || !strings.Contains(err.Error(), "RCM_INTERNAL_SECRET is not set") {
		t.Fatalf("got %v, want an error naming RCM_INTERNAL_SECRET", err)
	}
}
