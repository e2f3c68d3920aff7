// Package principal carries the verified caller from the gateway to the
// internal services. The gateway signs the principal it verified with a
// secret shared only by the platform's services (HMAC-SHA256), binding it to
// the request as sent: method, path and query, a SHA-256 of the body, the
// Idempotency-Key header, a short expiry and a nonce. An internal service
// trusts a principal only when that signature verifies and its nonce was
// not seen before (Nonces): a captured header proves nothing for another
// request, nor for the same request a second time.
package principal

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rcm-platform/rcm/pkg/httpx"
)

// Header carries the signed principal on internal requests.
const Header = "X-Rcm-Principal"

// TTL bounds how long a signed principal is accepted.
const TTL = time.Minute

// MaxBody bounds the body Verify reads to check its hash; the gateway sends
// at most its own 64 KiB limit.
const MaxBody = 256 << 10

// version prefixes the header and the signed text: a principal of another
// format never verifies.
const version = "v2"

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
	// Nonce is a lowercase ULID minted at signing, unique to one request.
	Nonce string `json:"jti"`
}

// Errors of Verify.
var (
	ErrMissing   = errors.New("no principal")
	ErrMalformed = errors.New("malformed principal")
	ErrSignature = errors.New("principal signature does not verify")
	ErrExpired   = errors.New("principal expired")
	ErrReplayed  = errors.New("principal already used")
	ErrNoGuard   = errors.New("no replay guard for requests that change state")
)

// Signer signs and verifies principals with one shared secret.
type Signer struct {
	secret []byte
	now    func() time.Time
	// reads and writes remember the nonces already accepted, for safe
	// methods (GET, HEAD) and for the others.
	reads, writes Nonces
	// inCommand names the requests whose command claims the nonce.
	inCommand func(*http.Request) bool
}

// ForService returns the Signer of a service's configured secret. There is
// no default: a service refuses to start without one; it warns when the
// secret is the local stack's.
func ForService(secret string, logger *slog.Logger) (*Signer, error) {
	if secret == "" {
		return nil, errors.New("RCM_INTERNAL_SECRET is not set: the gateway and the internal services need the secret they share (the local stack sets one)")
	}
	if secret == DevSecret {
		logger.Warn("RCM_INTERNAL_SECRET is the development secret; set a secret of your own outside the local stack")
	}
	return NewSigner(secret, time.Now)
}

// NewSigner returns a Signer. The secret must be at least 32 bytes. Reads
// are guarded against replay in this process (MemoryNonces); requests that
// change state are refused until GuardWrites names a guard.
func NewSigner(secret string, now func() time.Time) (*Signer, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("internal secret is %d bytes, want at least 32", len(secret))
	}
	return &Signer{secret: []byte(secret), now: now, reads: NewMemoryNonces(now)}, nil
}

// GuardWrites makes n the replay guard of requests that change state. It
// must hold across the service's replicas (package nonces): a replay sent to
// another replica would otherwise act twice.
func (s *Signer) GuardWrites(n Nonces) { s.writes = n }

// ClaimInCommand names the requests that change state whose command
// claims the principal's nonce itself, in the write that carries its
// effect, instead of the write guard's own write: Verify checks their
// signature, expiry and nonce format and leaves the nonce to the command.
// Such a command must claim it on every path, also one that writes
// nothing else, so that a replay is refused on whichever replica it
// arrives. The write guard must still be set, for the other requests.
func (s *Signer) ClaimInCommand(in func(*http.Request) bool) { s.inCommand = in }

// GuardReads replaces the replay guard of safe requests.
func (s *Signer) GuardReads(n Nonces) { s.reads = n }

func (s *Signer) mac(payload string, r *http.Request, bodyHash []byte) string {
	m := hmac.New(sha256.New, s.secret)
	// Header values cannot hold a newline, so the fields cannot run into
	// each other.
	fmt.Fprintf(m, "%s.%s\n%s\n%s\n%x\n%s", version, payload, r.Method, target(r), bodyHash, r.Header.Get("Idempotency-Key"))
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
// r's method, URL, body and Idempotency-Key are final. The body is read
// through r.GetBody, so what is hashed is what is sent. A signed request is
// single-use: Sign clears r.GetBody, so that the HTTP transport never sends
// it a second time (the caller's retry is a new, newly signed request).
func (s *Signer) Sign(r *http.Request, p Principal) error {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		if r.GetBody == nil {
			return errors.New("sign: the request's body cannot be read twice")
		}
		rc, err := r.GetBody()
		if err != nil {
			return fmt.Errorf("sign: read body: %w", err)
		}
		body, err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("sign: read body: %w", err)
		}
		r.GetBody = nil
	}
	now := s.now()
	p.Expires = now.Add(TTL).Unix()
	id, err := ulid.New(ulid.Timestamp(now), ulid.DefaultEntropy())
	if err != nil {
		return fmt.Errorf("sign: nonce: %w", err)
	}
	p.Nonce = strings.ToLower(id.String())
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode principal: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(raw)
	sum := sha256.Sum256(body)
	r.Header.Set(Header, version+"."+payload+"."+s.mac(payload, r, sum[:]))
	return nil
}

// Verify returns the principal of the incoming request r and uses up its
// nonce: a second Verify of the same signature fails with ErrReplayed. It
// reads r's body (at most MaxBody) and puts it back for the handler. An
// error of the replay guard itself (a store outage) is returned as it is,
// not as one of the errors above.
func (s *Signer) Verify(r *http.Request) (Principal, error) {
	v := r.Header.Get(Header)
	if v == "" {
		return Principal{}, ErrMissing
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 || parts[0] != version {
		return Principal{}, ErrMalformed
	}
	bodyHash, err := hashBody(r)
	if err != nil {
		return Principal{}, err
	}
	want := s.mac(parts[1], r, bodyHash)
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
	if err := checkNonce(p); err != nil {
		return Principal{}, err
	}
	if s.now().Unix() > p.Expires {
		return Principal{}, ErrExpired
	}
	guard := s.writes
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		guard = s.reads
	}
	if guard == nil {
		return Principal{}, ErrNoGuard
	}
	if guard == s.writes && s.inCommand != nil && s.inCommand(r) {
		return p, nil
	}
	if err := guard.Claim(r.Context(), p.Nonce, time.Unix(p.Expires, 0)); err != nil {
		return Principal{}, err
	}
	return p, nil
}

// checkNonce accepts a nonce minted when the principal was signed, that is
// TTL before it expires: the stores sweep nonces by their time, and must
// not forget one before its principal expires.
func checkNonce(p Principal) error {
	id, err := ulid.ParseStrict(strings.ToUpper(p.Nonce))
	if err != nil || strings.ToLower(id.String()) != p.Nonce {
		return ErrMalformed
	}
	signed := time.Unix(p.Expires, 0).Add(-TTL)
	if at := ulid.Time(id.Time()); at.Before(signed.Add(-time.Second)) || at.After(signed.Add(2*time.Second)) {
		return ErrMalformed
	}
	return nil
}

// hashBody returns the SHA-256 of r's body and leaves the body readable
// again.
func hashBody(r *http.Request) ([]byte, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
		r.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: read body: %v", ErrMalformed, err)
		}
		if len(b) > MaxBody {
			return nil, fmt.Errorf("%w: body over %d bytes", ErrMalformed, MaxBody)
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	sum := sha256.Sum256(body)
	return sum[:], nil
}

// verifyError reports whether err says the request carries no valid
// principal, rather than that the replay guard failed.
func verifyError(err error) bool {
	for _, e := range []error{ErrMissing, ErrMalformed, ErrSignature, ErrExpired, ErrReplayed, ErrNoGuard} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
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
// verifying, unused principal is refused with 403 Forbidden before any
// handler runs. A replay guard that cannot answer (its store is down) is
// answered as any dependency outage is, 503.
func (s *Signer) Require(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := s.Verify(r)
			if err != nil {
				if verifyError(err) {
					err = httpx.ErrForbidden.Wrap(err)
				}
				httpx.WriteError(w, r, logger, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
		})
	}
}

// DevSecret is the local stack's shared secret. The local stack passes it to
// the services; anywhere else RCM_INTERNAL_SECRET must be set to a secret of
// its own, and services warn when they run with this one.
const DevSecret = "rcm-local-development-secret-do-not-use-in-prod"
