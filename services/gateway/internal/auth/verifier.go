// Package auth owns the gateway's answer to "who is calling": it verifies the
// Clerk session token of the Authorization header (or, on safe requests,
// of Clerk's __session cookie) against Clerk's JWKS and
// turns it into the principal that every read and write is scoped by. It
// decides which tokens are acceptable (RS256 only, a known kid, exp required,
// exp/nbf with leeway, iss and azp as configured), how the JWKS is cached
// and refreshed, and which of the two contract errors a rejected request
// gets.
package auth

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
)

// Defaults of Config.
const (
	DefaultLeeway                    = 5 * time.Second
	DefaultUnknownKIDRefreshInterval = 10 * time.Second
	DefaultRefreshInterval           = time.Hour
)

// maxTokenBytes bounds what is handed to the JWT parser. Clerk session
// tokens are a few hundred bytes to a couple of KiB (they travel in a
// cookie); anything far larger is refused before any decoding work.
const maxTokenBytes = 16 << 10

// Config says where the keys are and which tokens are acceptable.
type Config struct {
	// JWKSURL is Clerk's JWKS endpoint (RCM_CLERK_JWKS_URL). Required.
	JWKSURL string
	// Issuer, when non-empty, must equal the token's iss (RCM_CLERK_ISSUER).
	Issuer string
	// AuthorizedParties, when non-empty, must contain the token's azp; a
	// token without azp is then rejected (RCM_CLERK_AUTHORIZED_PARTIES).
	AuthorizedParties []string
	// Leeway is the clock skew allowed on exp and nbf. Zero means
	// DefaultLeeway.
	Leeway time.Duration
	// UnknownKIDRefreshInterval bounds how often a token with a kid that
	// is not in the cached JWKS may trigger a fetch of the JWKS. Zero means
	// DefaultUnknownKIDRefreshInterval.
	UnknownKIDRefreshInterval time.Duration
	// RefreshInterval is the period of the background refresh of the JWKS.
	// Zero means DefaultRefreshInterval.
	RefreshInterval time.Duration
	// HTTPClient fetches the JWKS. Nil means a client with
	// http.DefaultTransport. It is copied, never modified.
	HTTPClient *http.Client
	// Now is the clock exp and nbf are checked against. Nil means
	// time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() (Config, error) {
	u, err := url.Parse(c.JWKSURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("JWKS URL %q is not an absolute http(s) URL", c.JWKSURL)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"leeway", &c.Leeway, DefaultLeeway},
		{"unknown kid refresh interval", &c.UnknownKIDRefreshInterval, DefaultUnknownKIDRefreshInterval},
		{"refresh interval", &c.RefreshInterval, DefaultRefreshInterval},
	} {
		switch {
		case *d.v < 0:
			return c, fmt.Errorf("%s is %s, want >= 0", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// Verifier verifies Clerk session tokens. It is safe for concurrent use.
type Verifier struct {
	parser  *jwt.Parser
	keys    keyfunc.Keyfunc
	parties []string
	metrics *metrics
}

// NewVerifier returns a Verifier for cfg with its metrics registered on reg
// (nil: not registered anywhere) and JWKS refresh failures logged to logger.
// It fetches the JWKS once before returning (waiting at most 5s) but does
// not fail when that fetch fails: the keys are then fetched when the first
// token needs them (subject to the unknown-kid rate limit) or at the next
// periodic refresh. The periodic refresh stops when ctx is done.
func NewVerifier(ctx context.Context, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Verifier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("auth config: %w", err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // unexposed: the caller wants no metrics
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	keys, err := newKeySource(ctx, cfg, m, logger)
	if err != nil {
		return nil, err
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		// Refuse non-canonical base64, so one signature has one encoding.
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	return &Verifier{
		parser:  jwt.NewParser(opts...),
		keys:    keys,
		parties: slices.Clone(cfg.AuthorizedParties),
		metrics: m,
	}, nil
}

// Verify returns the principal of the Authorization header value
// authorization. A missing header or one that is not "Bearer <token>" gives
// an error matching httpx.ErrMissingToken; a token that does not verify
// gives one matching httpx.ErrInvalidToken, whose Cause says why (for logs,
// never for the client).
func (v *Verifier) Verify(ctx context.Context, authorization string) (principal.Principal, error) {
	raw, err := bearerToken(authorization)
	if err != nil {
		return principal.Principal{}, v.missing(err)
	}
	return v.VerifyToken(ctx, raw)
}

// VerifyToken returns the principal of the session token raw, as Verify
// does for the token of its header: an error matching
// httpx.ErrInvalidToken when it does not verify.
func (v *Verifier) VerifyToken(ctx context.Context, raw string) (principal.Principal, error) {
	p, reason, err := v.verify(ctx, raw)
	if err != nil {
		v.metrics.fail(reason)
		return principal.Principal{}, httpx.ErrInvalidToken.Wrap(&rejection{reason: reason, err: err})
	}
	return p, nil
}

// missing counts and returns the refusal of a request without a usable
// Authorization header.
func (v *Verifier) missing(cause error) error {
	v.metrics.fail(reasonMissing)
	return httpx.ErrMissingToken.Wrap(cause)
}

// bearerToken returns the token of "Bearer <token>": the scheme in any case,
// one space, one token without whitespace.
func bearerToken(authorization string) (string, error) {
	authorization = strings.Trim(authorization, " \t")
	if authorization == "" {
		return "", errors.New("no Authorization header")
	}
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", errors.New(`Authorization header is not "Bearer <token>"`)
	}
	return token, nil
}

// sessionClaims are the claims of a Clerk session token the gateway uses.
// v2 tokens carry the active organization as "o": {"id": ...}, v1 tokens
// as "org_id".
type sessionClaims struct {
	jwt.RegisteredClaims
	SessionID       string `json:"sid,omitempty"`
	AuthorizedParty string `json:"azp,omitempty"`
	Org             *struct {
		ID string `json:"id"`
	} `json:"o,omitempty"`
	OrgIDV1 string `json:"org_id,omitempty"`
}

func (c *sessionClaims) orgID() string {
	if c.Org != nil && c.Org.ID != "" {
		return c.Org.ID
	}
	return c.OrgIDV1
}

var (
	errNoKeyID      = errors.New("token header has no kid")
	errUnknownKey   = errors.New("no usable key for the token's kid")
	errBadAlgorithm = errors.New("token alg is not RS256")
	errNoSubject    = errors.New("token has no sub")
	errNoParty      = errors.New("token has no azp")
	errWrongParty   = errors.New("token azp is not an authorized party")
)

func (v *Verifier) verify(ctx context.Context, raw string) (principal.Principal, reason, error) {
	if len(raw) > maxTokenBytes {
		return principal.Principal{}, reasonMalformed, fmt.Errorf("token is %d bytes, more than %d", len(raw), maxTokenBytes)
	}
	var claims sessionClaims
	tok, err := v.parser.ParseWithClaims(raw, &claims, v.keyfunc(ctx))
	if err != nil {
		return principal.Principal{}, classify(tok, err), err
	}
	if claims.Subject == "" {
		return principal.Principal{}, reasonMissingClaim, errNoSubject
	}
	if len(v.parties) > 0 {
		switch {
		case claims.AuthorizedParty == "":
			return principal.Principal{}, reasonMissingClaim, errNoParty
		case !slices.Contains(v.parties, claims.AuthorizedParty):
			return principal.Principal{}, reasonWrongParty, fmt.Errorf("%w: %q", errWrongParty, claims.AuthorizedParty)
		}
	}
	p := principal.Principal{
		AccountID: claims.Subject,
		UserID:    claims.Subject,
		SessionID: claims.SessionID,
		OrgID:     claims.orgID(),
	}
	if p.OrgID != "" {
		p.AccountID = p.OrgID
	}
	return p, "", nil
}

// keyfunc narrows keyfunc's lookup to what Clerk issues. The checks before
// the lookup matter: given a token without kid, keyfunc returns every cached
// key and golang-jwt accepts a signature by any of them.
func (v *Verifier) keyfunc(ctx context.Context) jwt.Keyfunc {
	lookup := v.keys.KeyfuncCtx(ctx)
	return func(t *jwt.Token) (any, error) {
		if t.Method == nil || t.Method.Alg() != jwt.SigningMethodRS256.Alg() {
			return nil, errBadAlgorithm
		}
		if kid, _ := t.Header["kid"].(string); kid == "" {
			return nil, errNoKeyID
		}
		key, err := lookup(t)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errUnknownKey, err)
		}
		if _, ok := key.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("%w: key is %T, want RSA", errUnknownKey, key)
		}
		return key, nil
	}
}

// classify maps a golang-jwt error to the reason it is counted under. The
// order matters where several apply: a token that cannot be parsed is
// malformed whatever its alg; a wrong alg is reported before the signature
// failure it causes.
func classify(tok *jwt.Token, err error) reason {
	switch {
	case errors.Is(err, errNoKeyID), errors.Is(err, jwt.ErrTokenMalformed):
		return reasonMalformed
	case errors.Is(err, errBadAlgorithm),
		tok != nil && (tok.Method == nil || tok.Method.Alg() != jwt.SigningMethodRS256.Alg()):
		return reasonBadAlgorithm
	case errors.Is(err, errUnknownKey):
		return reasonUnknownKey
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return reasonBadSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		return reasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return reasonNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return reasonWrongIssuer
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return reasonMissingClaim
	default:
		return reasonMalformed
	}
}

// rejection is the Cause of an ErrInvalidToken: the counted reason and the
// verification error.
type rejection struct {
	reason reason
	err    error
}

func (r *rejection) Error() string { return string(r.reason) + ": " + r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

// Ready reports whether the verifier holds at least one key, that is,
// whether it can verify a token at all: a readiness check.
func (v *Verifier) Ready(ctx context.Context) error {
	keys, err := v.keys.Storage().KeyReadAll(ctx)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return errors.New("no JWKS key yet")
	}
	return nil
}
