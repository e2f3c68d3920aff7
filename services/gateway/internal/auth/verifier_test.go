package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

const (
	testIssuer = "https://clerk.rcm.test"
	testParty  = "https://app.rcm.test"
)

// now is the verifier's clock in tests, so leeway cases do not depend on
// how long a test takes.
var now = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

type keys struct {
	// published is in the JWKS from the start, rotated is added later,
	// foreign never is.
	published, rotated, foreign sessiontoken.Key
}

var testKeys = sync.OnceValues(func() (keys, error) {
	var k keys
	for _, p := range []*sessiontoken.Key{&k.published, &k.rotated, &k.foreign} {
		var err error
		if *p, err = sessiontoken.NewKey(); err != nil {
			return keys{}, err
		}
	}
	return k, nil
})

func mustKeys(tb testing.TB) keys {
	tb.Helper()
	k, err := testKeys()
	if err != nil {
		tb.Fatalf("generate keys: %v", err)
	}
	return k
}

// jwksServer publishes a JWKS over loopback HTTP, like Clerk's endpoint.
type jwksServer struct {
	*httptest.Server
	doc  atomic.Pointer[[]byte]
	down atomic.Bool
	hits atomic.Int64
}

func newJWKSServer(tb testing.TB, published ...sessiontoken.Key) *jwksServer {
	tb.Helper()
	s := &jwksServer{}
	s.publish(published...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*s.doc.Load())
	}))
	tb.Cleanup(s.Close)
	return s
}

func (s *jwksServer) publish(published ...sessiontoken.Key) {
	doc := sessiontoken.JWKS(published...)
	s.doc.Store(&doc)
}

// publishWithoutAlg publishes keys with no "alg" member, which RFC 7517
// allows; then nothing in the JWKS ties a key to RS256.
func (s *jwksServer) publishWithoutAlg(tb testing.TB, published ...sessiontoken.Key) {
	tb.Helper()
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(sessiontoken.JWKS(published...), &doc); err != nil {
		tb.Fatalf("decode JWKS: %v", err)
	}
	for _, k := range doc.Keys {
		delete(k, "alg")
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		tb.Fatalf("encode JWKS: %v", err)
	}
	s.doc.Store(&raw)
}

func baseConfig(s *jwksServer) Config {
	return Config{
		JWKSURL:           s.URL + "/.well-known/jwks.json",
		Issuer:            testIssuer,
		AuthorizedParties: []string{"https://other.rcm.test", testParty},
		HTTPClient:        s.Client(),
		Now:               func() time.Time { return now },
	}
}

func newTestVerifier(tb testing.TB, cfg Config) (*Verifier, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	v, err := NewVerifier(tb.Context(), cfg, reg, logger)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v, reg
}

func (v *Verifier) failures(r reason) float64 {
	return testutil.ToFloat64(v.metrics.failures.WithLabelValues(string(r)))
}

func (v *Verifier) refreshes() (ok, failed float64) {
	return testutil.ToFloat64(v.metrics.refreshOK), testutil.ToFloat64(v.metrics.refreshErr)
}

func mint(tb testing.TB, k sessiontoken.Key, c sessiontoken.Claims) string {
	tb.Helper()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = now
	}
	if c.TTL == 0 {
		c.TTL = time.Minute
	}
	tok, err := sessiontoken.Mint(k, c)
	if err != nil {
		tb.Fatalf("mint: %v", err)
	}
	return tok
}

// validClaims are the claims of a v2 org token that the base config
// accepts, as a map the cases can bend.
func validClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "user_1", "sid": "sess_1", "iss": testIssuer, "azp": testParty,
		"iat": now.Unix(), "nbf": now.Add(-5 * time.Second).Unix(), "exp": now.Add(time.Minute).Unix(),
		"v": 2, "o": map[string]any{"id": "org_1", "rol": "admin"},
	}
}

func without(c jwt.MapClaims, names ...string) jwt.MapClaims {
	for _, n := range names {
		delete(c, n)
	}
	return c
}

func with(c jwt.MapClaims, name string, value any) jwt.MapClaims {
	c[name] = value
	return c
}

// sign signs claims with method and key; kid "" leaves the header without
// a kid.
func sign(tb testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	tb.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

func publicKeyPEM(tb testing.TB, k sessiontoken.Key) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.Private.PublicKey)
	if err != nil {
		tb.Fatalf("marshal public key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// withPayload returns tok with its claims replaced and its signature kept.
func withPayload(tb testing.TB, tok string, claims jwt.MapClaims) string {
	tb.Helper()
	raw, err := json.Marshal(claims)
	if err != nil {
		tb.Fatalf("encode claims: %v", err)
	}
	parts := strings.Split(tok, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func TestVerify(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate EC key: %v", err)
	}
	pid := k.published.ID
	valid := sessiontoken.Claims{Subject: "user_1", SessionID: "sess_1", OrgID: "org_1", Issuer: testIssuer, AuthorizedParty: testParty}
	v2Org := mint(t, k.published, valid)
	bearer := func(tok string) string { return "Bearer " + tok }

	tests := []struct {
		name   string
		cfg    func(*Config) // adjusts baseConfig; nil keeps it
		header func(t *testing.T) string
		want   principal.Principal // when the token is accepted
		// reason is set when the token is refused with ErrInvalidToken;
		// missing when with ErrMissingToken.
		reason  reason
		missing bool
		// fetches is how many JWKS fetches Verify may cause.
		fetches float64
	}{
		{
			name:   "v2 org token",
			header: func(t *testing.T) string { return bearer(v2Org) },
			want:   principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"},
		},
		{
			name: "v1 org_id token",
			header: func(t *testing.T) string {
				c := valid
				c.V1 = true
				return bearer(mint(t, k.published, c))
			},
			want: principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"},
		},
		{
			name: "v2 personal token: the account is the user",
			header: func(t *testing.T) string {
				c := valid
				c.OrgID = ""
				return bearer(mint(t, k.published, c))
			},
			want: principal.Principal{AccountID: "user_1", UserID: "user_1", SessionID: "sess_1"},
		},
		{
			name: "v1 personal token",
			header: func(t *testing.T) string {
				c := valid
				c.OrgID, c.V1 = "", true
				return bearer(mint(t, k.published, c))
			},
			want: principal.Principal{AccountID: "user_1", UserID: "user_1", SessionID: "sess_1"},
		},
		{
			name: "o.id wins over org_id",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodRS256, k.published.Private, pid, with(validClaims(), "org_id", "org_v1")))
			},
			want: principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"},
		},
		{
			name:   "scheme in lower case",
			header: func(t *testing.T) string { return "bearer " + v2Org },
			want:   principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"},
		},
		{
			name:   "scheme in upper case",
			header: func(t *testing.T) string { return "BEARER " + v2Org },
			want:   principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"},
		},
		{
			name: "expired 2s ago, within the leeway",
			header: func(t *testing.T) string {
				c := valid
				c.IssuedAt, c.TTL = now.Add(-62*time.Second), time.Minute
				return bearer(mint(t, k.published, c))
			},
			want: principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"},
		},
		{
			name: "nbf 3s ahead, within the leeway",
			header: func(t *testing.T) string {
				c := valid
				c.IssuedAt = now.Add(8 * time.Second) // Mint sets nbf = iat - 5s
				return bearer(mint(t, k.published, c))
			},
			want: principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"},
		},
		{
			name: "no iss and no azp when neither is configured",
			cfg:  func(c *Config) { c.Issuer, c.AuthorizedParties = "", nil },
			header: func(t *testing.T) string {
				return bearer(mint(t, k.published, sessiontoken.Claims{Subject: "user_1"}))
			},
			want: principal.Principal{AccountID: "user_1", UserID: "user_1"},
		},

		{name: "no header", header: func(*testing.T) string { return "" }, missing: true},
		{name: "blank header", header: func(*testing.T) string { return "  " }, missing: true},
		{name: "scheme only", header: func(*testing.T) string { return "Bearer" }, missing: true},
		{name: "scheme and a space", header: func(*testing.T) string { return "Bearer " }, missing: true},
		{name: "other scheme", header: func(*testing.T) string { return "Basic dXNlcjpwYXNz" }, missing: true},
		{name: "token without scheme", header: func(*testing.T) string { return v2Org }, missing: true},
		{name: "no space after the scheme", header: func(*testing.T) string { return "Bearer" + v2Org }, missing: true},
		{name: "two spaces after the scheme", header: func(*testing.T) string { return "Bearer  " + v2Org }, missing: true},
		{name: "tab after the scheme", header: func(*testing.T) string { return "Bearer\t" + v2Org }, missing: true},
		{name: "two tokens", header: func(*testing.T) string { return "Bearer " + v2Org + " " + v2Org }, missing: true},

		{name: "garbage", header: func(*testing.T) string { return "Bearer not-a-jwt" }, reason: reasonMalformed},
		{name: "two segments", header: func(*testing.T) string {
			return bearer(v2Org[:strings.LastIndex(v2Org, ".")])
		}, reason: reasonMalformed},
		{name: "four segments", header: func(*testing.T) string { return bearer(v2Org + ".e30") }, reason: reasonMalformed},
		{name: "huge token", header: func(*testing.T) string {
			return bearer(v2Org + strings.Repeat("A", maxTokenBytes))
		}, reason: reasonMalformed},
		{
			name: "alg none",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, pid, validClaims()))
			},
			reason: reasonBadAlgorithm,
		},
		{
			name: "HS256 with the public key as the HMAC secret",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodHS256, publicKeyPEM(t, k.published), pid, validClaims()))
			},
			reason: reasonBadAlgorithm,
		},
		{
			name: "RS512",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodRS512, k.published.Private, pid, validClaims()))
			},
			reason: reasonBadAlgorithm,
		},
		{
			name: "PS256",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodPS256, k.published.Private, pid, validClaims()))
			},
			reason: reasonBadAlgorithm,
		},
		{
			name: "ES256",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodES256, ecKey, pid, validClaims()))
			},
			reason: reasonBadAlgorithm,
		},
		{
			name: "alg the library does not know",
			header: func(t *testing.T) string {
				h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS999","kid":"` + pid + `","typ":"JWT"}`))
				parts := strings.Split(v2Org, ".")
				return bearer(h + "." + parts[1] + "." + parts[2])
			},
			reason: reasonBadAlgorithm,
		},
		{
			name: "no kid, signed by a published key",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodRS256, k.published.Private, "", validClaims()))
			},
			reason: reasonMalformed,
		},
		{
			name: "unknown kid, after one refresh",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodRS256, k.foreign.Private, k.foreign.ID, validClaims()))
			},
			reason:  reasonUnknownKey,
			fetches: 1,
		},
		{
			name: "signed by another key claiming a published kid",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodRS256, k.foreign.Private, pid, validClaims()))
			},
			reason: reasonBadSignature,
		},
		{
			name: "claims changed after signing",
			header: func(t *testing.T) string {
				return bearer(withPayload(t, v2Org, with(validClaims(), "o", map[string]any{"id": "org_victim"})))
			},
			reason: reasonBadSignature,
		},
		{
			name: "expired 1 minute ago",
			header: func(t *testing.T) string {
				c := valid
				c.IssuedAt, c.TTL = now.Add(-2*time.Minute), time.Minute
				return bearer(mint(t, k.published, c))
			},
			reason: reasonExpired,
		},
		{
			name: "nbf in the future",
			header: func(t *testing.T) string {
				c := valid
				c.IssuedAt = now.Add(time.Minute)
				return bearer(mint(t, k.published, c))
			},
			reason: reasonNotYetValid,
		},
		{
			name: "no exp",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodRS256, k.published.Private, pid, without(validClaims(), "exp")))
			},
			reason: reasonMissingClaim,
		},
		{
			name: "no sub",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodRS256, k.published.Private, pid, without(validClaims(), "sub")))
			},
			reason: reasonMissingClaim,
		},
		{
			name: "exp not a number",
			header: func(t *testing.T) string {
				return bearer(sign(t, jwt.SigningMethodRS256, k.published.Private, pid, with(validClaims(), "exp", "tomorrow")))
			},
			reason: reasonMalformed,
		},
		{
			name: "wrong issuer",
			header: func(t *testing.T) string {
				c := valid
				c.Issuer = "https://clerk.attacker.test"
				return bearer(mint(t, k.published, c))
			},
			reason: reasonWrongIssuer,
		},
		{
			name: "no iss when an issuer is configured",
			header: func(t *testing.T) string {
				c := valid
				c.Issuer = ""
				return bearer(mint(t, k.published, c))
			},
			reason: reasonMissingClaim,
		},
		{
			name: "azp not an authorized party",
			header: func(t *testing.T) string {
				c := valid
				c.AuthorizedParty = "https://evil.test"
				return bearer(mint(t, k.published, c))
			},
			reason: reasonWrongParty,
		},
		{
			name: "no azp when authorized parties are configured",
			header: func(t *testing.T) string {
				c := valid
				c.AuthorizedParty = ""
				return bearer(mint(t, k.published, c))
			},
			reason: reasonMissingClaim,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newJWKSServer(t, k.published)
			cfg := baseConfig(srv)
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			v, _ := newTestVerifier(t, cfg)
			header := tc.header(t)

			got, err := v.Verify(t.Context(), header)

			switch {
			case tc.missing:
				if !errors.Is(err, httpx.ErrMissingToken) || errors.Is(err, httpx.ErrInvalidToken) {
					t.Fatalf("got err %v, want ErrMissingToken", err)
				}
				if n := v.failures(reasonMissing); n != 1 {
					t.Errorf("got %v failures counted as %q, want 1", n, reasonMissing)
				}
			case tc.reason != "":
				if !errors.Is(err, httpx.ErrInvalidToken) || errors.Is(err, httpx.ErrMissingToken) {
					t.Fatalf("got err %v, want ErrInvalidToken", err)
				}
				for _, r := range reasons {
					want := 0.0
					if r == tc.reason {
						want = 1
					}
					if n := v.failures(r); n != want {
						t.Errorf("got %v failures counted as %q, want %v (err: %v)", n, r, want, err)
					}
				}
			default:
				if err != nil {
					t.Fatalf("got err %v, want the token accepted", err)
				}
				if got != tc.want {
					t.Errorf("got principal %+v, want %+v", got, tc.want)
				}
			}
			if err != nil && got != (principal.Principal{}) {
				t.Errorf("got principal %+v with err %v, want none", got, err)
			}
			if ok, failed := v.refreshes(); ok != 1+tc.fetches || failed != 0 {
				t.Errorf("got %v ok and %v failed JWKS fetches, want %v ok and 0 failed", ok, failed, 1+tc.fetches)
			}
			if hits := srv.hits.Load(); float64(hits) != 1+tc.fetches {
				t.Errorf("JWKS server saw %d requests, want %v", hits, 1+tc.fetches)
			}
		})
	}
}

// Without "alg" in the JWKS, keyfunc would hand the RSA key to any RSA-based
// method the token names; only RS256 may pass.
func TestOnlyRS256WhenTheJWKSOmitsAlg(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	pid := k.published.ID
	tests := []struct {
		name   string
		token  func(t *testing.T) string
		reason reason
	}{
		{"RS512", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodRS512, k.published.Private, pid, validClaims())
		}, reasonBadAlgorithm},
		{"PS256", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodPS256, k.published.Private, pid, validClaims())
		}, reasonBadAlgorithm},
		{"HS256 keyed with the public key", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, publicKeyPEM(t, k.published), pid, validClaims())
		}, reasonBadAlgorithm},
		{"RS256", func(t *testing.T) string {
			return sign(t, jwt.SigningMethodRS256, k.published.Private, pid, validClaims())
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newJWKSServer(t)
			srv.publishWithoutAlg(t, k.published)
			v, _ := newTestVerifier(t, baseConfig(srv))

			_, err := v.Verify(t.Context(), "Bearer "+tc.token(t))

			if tc.reason == "" {
				if err != nil {
					t.Fatalf("got %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, httpx.ErrInvalidToken) {
				t.Fatalf("got %v, want ErrInvalidToken", err)
			}
			if n := v.failures(tc.reason); n != 1 {
				t.Errorf("got %v failures counted as %q, want 1 (err: %v)", n, tc.reason, err)
			}
		})
	}
}

// The reason a client sees nothing of: the error's Cause is for logs, the
// message is the contract's.
func TestVerifyErrorsKeepTheContractMessage(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	srv := newJWKSServer(t, k.published)
	v, _ := newTestVerifier(t, baseConfig(srv))
	for header, want := range map[string]string{
		"":             contract.MsgMissingToken,
		"Bearer a.b.c": contract.MsgInvalidToken,
		"Bearer " + mint(t, k.foreign, sessiontoken.Claims{Subject: "u"}): contract.MsgInvalidToken,
	} {
		_, err := v.Verify(t.Context(), header)
		var he *httpx.Error
		if !errors.As(err, &he) || he.Status != http.StatusUnauthorized || he.Message != want || he.Details != nil {
			t.Errorf("Verify(%.20q): got %#v, want a 401 with message %q and no details", header, err, want)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	srv := newJWKSServer(t, k.published)
	v, _ := newTestVerifier(t, baseConfig(srv))
	claims := sessiontoken.Claims{Subject: "user_1", Issuer: testIssuer, AuthorizedParty: testParty}

	if _, err := v.Verify(t.Context(), "Bearer "+mint(t, k.published, claims)); err != nil {
		t.Fatalf("token of the published key: got %v, want accepted", err)
	}
	srv.publish(k.published, k.rotated)
	got, err := v.Verify(t.Context(), "Bearer "+mint(t, k.rotated, claims))
	if err != nil {
		t.Fatalf("token of the rotated-in key: got %v, want accepted", err)
	}
	if got.UserID != "user_1" {
		t.Errorf("got user %q, want user_1", got.UserID)
	}
	if ok, _ := v.refreshes(); ok != 2 {
		t.Errorf("got %v JWKS fetches, want 2 (start, then one for the new kid)", ok)
	}
	// Both keys are cached now: neither needs another fetch.
	for _, key := range []sessiontoken.Key{k.published, k.rotated} {
		if _, err := v.Verify(t.Context(), "Bearer "+mint(t, key, claims)); err != nil {
			t.Errorf("token of %s after the rotation: got %v, want accepted", key.ID, err)
		}
	}
	if hits := srv.hits.Load(); hits != 2 {
		t.Errorf("JWKS server saw %d requests, want 2", hits)
	}

	// A key removed from the JWKS stops verifying once the JWKS is fetched
	// again.
	srv.publish(k.rotated)
	v2, _ := newTestVerifier(t, baseConfig(srv))
	if _, err := v2.Verify(t.Context(), "Bearer "+mint(t, k.published, claims)); !errors.Is(err, httpx.ErrInvalidToken) {
		t.Errorf("token of the retired key: got %v, want ErrInvalidToken", err)
	}
}

func TestUnknownKIDFloodIsRateLimited(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	srv := newJWKSServer(t, k.published)
	v, _ := newTestVerifier(t, baseConfig(srv))

	const flood = 200
	tokens := make([]string, flood)
	for i := range tokens {
		tokens[i] = sign(t, jwt.SigningMethodRS256, k.foreign.Private, rand.Text(), validClaims())
	}
	var wg sync.WaitGroup
	errs := make([]error, flood)
	for i, tok := range tokens {
		wg.Go(func() { _, errs[i] = v.Verify(t.Context(), "Bearer "+tok) })
	}
	wg.Wait()

	for i, err := range errs {
		if !errors.Is(err, httpx.ErrInvalidToken) {
			t.Fatalf("token %d: got %v, want ErrInvalidToken", i, err)
		}
	}
	if n := v.failures(reasonUnknownKey); n != flood {
		t.Errorf("got %v failures counted as unknown_key, want %d", n, flood)
	}
	if hits := srv.hits.Load(); hits > 1+2 {
		t.Errorf("JWKS server saw %d requests for %d unknown kids, want at most 3 (start and a couple of refreshes)", hits, flood)
	}
	if ok, failed := v.refreshes(); ok+failed != float64(srv.hits.Load()) {
		t.Errorf("got %v+%v fetches counted, want the %d the server saw", ok, failed, srv.hits.Load())
	}
	// The flood does not lock out a known key.
	if _, err := v.Verify(t.Context(), "Bearer "+sign(t, jwt.SigningMethodRS256, k.published.Private, k.published.ID, validClaims())); err != nil {
		t.Errorf("token of the published key after the flood: got %v, want accepted", err)
	}
}

func TestUnknownKIDRefreshesAgainAfterTheInterval(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	srv := newJWKSServer(t, k.published)
	cfg := baseConfig(srv)
	cfg.UnknownKIDRefreshInterval = 50 * time.Millisecond
	v, _ := newTestVerifier(t, cfg)
	unknown := "Bearer " + sign(t, jwt.SigningMethodRS256, k.foreign.Private, k.foreign.ID, validClaims())

	if _, err := v.Verify(t.Context(), unknown); !errors.Is(err, httpx.ErrInvalidToken) {
		t.Fatalf("got %v, want ErrInvalidToken", err)
	}
	if hits := srv.hits.Load(); hits != 2 {
		t.Fatalf("JWKS server saw %d requests, want 2", hits)
	}
	eventually(t, 2*time.Second, func() bool {
		_, _ = v.Verify(t.Context(), unknown)
		return srv.hits.Load() == 3
	}, "a third JWKS fetch once the interval passed")
}

func TestJWKSDownAtStart(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	srv := newJWKSServer(t, k.published)
	srv.down.Store(true)
	v, _ := newTestVerifier(t, baseConfig(srv))
	if ok, failed := v.refreshes(); ok != 0 || failed != 1 {
		t.Fatalf("got %v ok and %v failed JWKS fetches at start, want 0 and 1", ok, failed)
	}
	tok := "Bearer " + mint(t, k.published, sessiontoken.Claims{Subject: "user_1", Issuer: testIssuer, AuthorizedParty: testParty})
	if err := v.Ready(t.Context()); err == nil {
		t.Fatal("ready without a single key, want not ready")
	}

	srv.down.Store(false)
	got, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("first token once the JWKS is up: got %v, want accepted", err)
	}
	if err := v.Ready(t.Context()); err != nil {
		t.Fatalf("not ready once the keys are fetched: %v", err)
	}
	if got.AccountID != "user_1" {
		t.Errorf("got account %q, want user_1", got.AccountID)
	}
	if ok, failed := v.refreshes(); ok != 1 || failed != 1 {
		t.Errorf("got %v ok and %v failed JWKS fetches, want 1 and 1", ok, failed)
	}
}

func TestJWKSStillDownAtFirstToken(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	srv := newJWKSServer(t, k.published)
	srv.down.Store(true)
	cfg := baseConfig(srv)
	cfg.UnknownKIDRefreshInterval = 20 * time.Millisecond
	v, _ := newTestVerifier(t, cfg)
	tok := "Bearer " + mint(t, k.published, sessiontoken.Claims{Subject: "user_1", Issuer: testIssuer, AuthorizedParty: testParty})

	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, httpx.ErrInvalidToken) {
		t.Fatalf("token while the JWKS is down: got %v, want ErrInvalidToken", err)
	}
	if n := v.failures(reasonUnknownKey); n != 1 {
		t.Errorf("got %v failures counted as unknown_key, want 1", n)
	}
	srv.down.Store(false)
	eventually(t, 2*time.Second, func() bool {
		_, err := v.Verify(t.Context(), tok)
		return err == nil
	}, "the token accepted once the JWKS is back")
}

func TestPeriodicRefreshStopsWithTheContext(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	srv := newJWKSServer(t, k.published)
	cfg := baseConfig(srv)
	cfg.RefreshInterval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := NewVerifier(ctx, cfg, nil, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	eventually(t, 2*time.Second, func() bool { return srv.hits.Load() >= 3 }, "periodic JWKS fetches")
	cancel()
	// A tick racing the cancellation may still fetch once; after that,
	// nothing. Absence can only be watched for a while.
	settled := srv.hits.Load()
	deadline := time.Now().Add(20 * cfg.RefreshInterval)
	for time.Now().Before(deadline) {
		if hits := srv.hits.Load(); hits > settled+1 {
			t.Fatalf("JWKS server saw %d requests after the context ended with %d, want at most one more", hits, settled)
		}
		time.Sleep(cfg.RefreshInterval)
	}
}

func TestNewVerifierRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"no JWKS URL":       {},
		"relative URL":      {JWKSURL: "/jwks.json"},
		"not http":          {JWKSURL: "file:///etc/jwks.json"},
		"negative leeway":   {JWKSURL: "https://clerk.rcm.test/jwks", Leeway: -time.Second},
		"negative interval": {JWKSURL: "https://clerk.rcm.test/jwks", RefreshInterval: -time.Second},
	} {
		if _, err := NewVerifier(t.Context(), cfg, nil, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%s: got a verifier, want an error", name)
		}
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	k := mustKeys(t)
	srv := newJWKSServer(t, k.published)
	v, reg := newTestVerifier(t, baseConfig(srv))
	// A second verifier on the same registry shares the series.
	v2, _ := newTestVerifierOn(t, baseConfig(srv), reg)

	_, _ = v.Verify(t.Context(), "")
	_, _ = v2.Verify(t.Context(), "Bearer x.y.z")
	_, _ = v2.Verify(t.Context(), "Bearer "+mint(t, k.published, sessiontoken.Claims{Subject: "u", Issuer: testIssuer, AuthorizedParty: testParty, TTL: -time.Hour}))

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(v.metrics.failures); n != len(reasons) {
		t.Errorf("got %d failure series, want one per reason (%d)", n, len(reasons))
	}
	for r, want := range map[reason]float64{reasonMissing: 1, reasonMalformed: 1, reasonExpired: 1, reasonBadSignature: 0} {
		if n := v.failures(r); n != want {
			t.Errorf("got %v failures counted as %q, want %v", n, r, want)
		}
	}
	if ok, _ := v.refreshes(); ok != 2 {
		t.Errorf("got %v ok fetches on the shared registry, want 2 (one per verifier)", ok)
	}
}

func newTestVerifierOn(tb testing.TB, cfg Config, reg *prometheus.Registry) (*Verifier, *prometheus.Registry) {
	tb.Helper()
	v, err := NewVerifier(tb.Context(), cfg, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v, reg
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s, it did not happen", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
