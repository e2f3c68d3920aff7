package devjwks

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"maps"
	"math/big"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

func start(t *testing.T, keyPath string) *Server {
	t.Helper()
	s, err := Start(t.Context(), Config{Addr: "127.0.0.1:0", KeyPath: keyPath})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// fetchKeys GETs the JWKS over HTTP and returns its public keys by kid.
func fetchKeys(t *testing.T, url string) map[string]*rsa.PublicKey {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", url, res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	var doc struct {
		Keys []sessiontoken.JWK `json:"keys"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil {
		t.Fatalf("decode JWKS: %v", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range doc.Keys {
		if k.Kty != "RSA" || k.Alg != "RS256" || k.Use != "sig" {
			t.Fatalf("JWK %+v, want an RS256 signing key", k)
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			t.Fatalf("JWK %s: bad n or e", k.Kid)
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	return keys
}

// verify checks token against keys as a gateway would and returns its claims.
func verify(t *testing.T, token string, keys map[string]*rsa.PublicKey, issuer string) (jwt.MapClaims, string) {
	t.Helper()
	var kid string
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(tok *jwt.Token) (any, error) {
		kid, _ = tok.Header["kid"].(string)
		k, ok := keys[kid]
		if !ok {
			return nil, jwt.ErrTokenUnverifiable
		}
		return k, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(issuer), jwt.WithLeeway(5*time.Second))
	if err != nil {
		t.Fatalf("verify token (kid %q): %v", kid, err)
	}
	return claims, kid
}

func TestServesJWKSAndMintsVerifiableTokens(t *testing.T) {
	s := start(t, filepath.Join(t.TempDir(), "keys", "dev.pem"))
	if want := "http://" + s.Addr(); s.Issuer() != want {
		t.Fatalf("Issuer() = %q, want %q", s.Issuer(), want)
	}
	if want := s.Issuer() + "/.well-known/jwks.json"; s.JWKSURL() != want {
		t.Fatalf("JWKSURL() = %q, want %q", s.JWKSURL(), want)
	}
	keys := fetchKeys(t, s.JWKSURL())
	if len(keys) != 1 || keys[s.Key().ID] == nil {
		t.Fatalf("JWKS kids = %v, want only %s", slices.Collect(maps.Keys(keys)), s.Key().ID)
	}

	tok, err := s.Mint(sessiontoken.Claims{Subject: "user_1", SessionID: "sess_1", OrgID: "org_1"})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	claims, kid := verify(t, tok, keys, s.Issuer())
	if kid != s.Key().ID {
		t.Fatalf("token kid = %q, want %q", kid, s.Key().ID)
	}
	if claims["sub"] != "user_1" || claims["sid"] != "sess_1" {
		t.Fatalf("claims = %v, want sub user_1 and sid sess_1", claims)
	}
	exp, _ := claims.GetExpirationTime()
	if d := time.Until(exp.Time); d < 50*time.Minute || d > DefaultTTL {
		t.Fatalf("token expires in %v, want about %v", d, DefaultTTL)
	}

	// An explicit issuer is kept.
	tok, err = s.Mint(sessiontoken.Claims{Subject: "user_1", Issuer: "https://clerk.example.test"})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	verify(t, tok, keys, "https://clerk.example.test")

	if got := s.Requests(); got != 1 {
		t.Fatalf("Requests() = %d, want 1", got)
	}
	fetchKeys(t, s.JWKSURL())
	if got := s.Requests(); got != 2 {
		t.Fatalf("Requests() = %d, want 2", got)
	}
	// Only the JWKS path is served.
	res, err := http.Get(s.Issuer() + "/other")
	if err != nil {
		t.Fatalf("GET /other: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || s.Requests() != 2 {
		t.Fatalf("GET /other: status %d, requests %d; want 404 and still 2", res.StatusCode, s.Requests())
	}
}

func TestRotatePublishesBothKeys(t *testing.T) {
	s := start(t, filepath.Join(t.TempDir(), "dev.pem"))
	old := s.Key()
	oldTok, err := s.Mint(sessiontoken.Claims{Subject: "user_1"})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	k, err := s.Rotate()
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if k.ID == old.ID || s.Key().ID != k.ID {
		t.Fatalf("after Rotate: Key() = %s, rotated %s, old %s; want the new key current", s.Key().ID, k.ID, old.ID)
	}
	keys := fetchKeys(t, s.JWKSURL())
	if len(keys) != 2 || keys[old.ID] == nil || keys[k.ID] == nil {
		t.Fatalf("JWKS kids = %v, want %s and %s", slices.Collect(maps.Keys(keys)), old.ID, k.ID)
	}
	newTok, err := s.Mint(sessiontoken.Claims{Subject: "user_1"})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	if _, kid := verify(t, newTok, keys, s.Issuer()); kid != k.ID {
		t.Fatalf("new token kid = %s, want %s", kid, k.ID)
	}
	if _, kid := verify(t, oldTok, keys, s.Issuer()); kid != old.ID {
		t.Fatalf("old token kid = %s, want %s", kid, old.ID)
	}
}

func TestKeySurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.pem")
	s := start(t, path)
	tok, err := s.Mint(sessiontoken.Claims{Subject: "user_1"})
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	addr, kid := s.Addr(), s.Key().ID
	s.Close()
	s.Close() // twice is harmless
	if _, err := http.Get(s.JWKSURL()); err == nil {
		t.Fatal("GET after Close: got a response, want a connection error")
	}

	s2, err := Start(t.Context(), Config{Addr: addr, KeyPath: path})
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	t.Cleanup(s2.Close)
	if s2.Key().ID != kid {
		t.Fatalf("key after restart = %s, want %s", s2.Key().ID, kid)
	}
	verify(t, tok, fetchKeys(t, s2.JWKSURL()), s2.Issuer())
}

func TestStartNeedsKeyPath(t *testing.T) {
	if _, err := Start(t.Context(), Config{Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("Start without KeyPath: got no error, want one")
	}
}
