// Package principal carries the verified caller from the gateway to the
// internal services. The gateway signs the principal it verified with a
// secret shared only by the platform's services (HMAC-SHA256), binding it to
// the request's method, path and query and to a short expiry; an internal
// service trusts a principal only when that signature verifies. A
// client-supplied header therefore proves nothing.
package principal

import (
	"log/slog"

	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"net/http"
	"strings"
	"time"
)

// Header carries the signed principal on internal requests.
const Header = "X-Rcm-Principal"

// TTL bounds how long a signed principal is accepted.
const TTL = time.Minute

// Principal is the verified caller.
type Principal struct {
	// AccountID scopes every read and write: the active organization, else
	// the user.
	AccountID string `json:"acct"`
	UserID    string `json:"sub"`
	SessionID string `json:"sid,omitempty"`
	OrgID     string `json:"org,omitempty"`
	// Expires is a Unix time in seconds.
	Expires int64 `json:"exp"`
}

// Errors of Verify.
var (
	ErrMissing   = errors.New("no principal")
	ErrMalformed = errors.New("malformed principal")
	ErrSignature = errors.New("principal signature does not verify")
	ErrExpired   = errors.New("principal expired")
)

// Signer signs and verifies principals with one shared secret.
type Signer struct {
	secret []byte
	now    func() time.Time
}

// ForService returns the Signer of a service's configured secret, warning
// when it is the development one.
func ForService(secret string, logger *slog.Logger) (*Signer, error) {
	if secret == DevSecret {
		logger.Warn("RCM_INTERNAL_SECRET is the development secret; set a secret of your own outside the local stack")
	}
	return NewSigner(secret, time.Now)
}

// NewSigner returns a Signer. The secret must be at least 32 bytes.
func NewSigner(secret string, now func() time.Time) (*Signer, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("internal secret is %d bytes, want at least 32", len(secret))
	}
	return &Signer{secret: []byte(secret), now: now}, nil
}

func (s *Signer) mac(payload, method, target string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("v1." + payload + "\n" + method + "\n" + target))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func target(r *http.Request) string {
	t := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		t += "?" + r.URL.RawQuery
	}
	return t
}

// Sign sets the signed principal on the outgoing request r. Call it after
// r's method and URL are final.
func (s *Signer) Sign(r *http.Request, p Principal) error {
	p.Expires = s.now().Add(TTL).Unix()
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode principal: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(raw)
	r.Header.Set(Header, "v1."+payload+"."+s.mac(payload, r.Method, target(r)))
	return nil
}

// Verify returns the principal of the incoming request r.
func (s *Signer) Verify(r *http.Request) (Principal, error) {
	v := r.Header.Get(Header)
	if v == "" {
		return Principal{}, ErrMissing
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return Principal{}, ErrMalformed
	}
	want := s.mac(parts[1], r.Method, target(r))
	if !hmac.Equal([]byte(want), []byte(parts[2])) {
		return Principal{}, ErrSignature
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Principal{}, ErrMalformed
	}
	var p Principal
	if err := json.Unmarshal(raw, &p); err != nil || p.AccountID == "" || p.UserID == "" {
		return Principal{}, ErrMalformed
	}
	if s.now().Unix() > p.Expires {
		return Principal{}, ErrExpired
	}
	return p, nil
}

type ctxKey struct{}

// From returns the principal Require stored in ctx.
func From(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// Require is middleware for internal services: a request without a
// verifying principal is refused with 403 Forbidden before any handler
// runs.
func (s *Signer) Require(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := s.Verify(r)
			if err != nil {
				httpx.WriteError(w, r, logger, httpx.ErrForbidden.Wrap(err))
				return
			}
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
		})
	}
}

// DevSecret is the local stack's shared secret. Production sets
// RCM_INTERNAL_SECRET to a secret of its own; services warn when they run
// with this one.
const DevSecret = "rcm-local-development-secret-do-not-use-in-prod"
