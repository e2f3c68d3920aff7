package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
)

// SessionCookie is the cookie in which Clerk's front-end keeps the session
// token on the application's own domain.
const SessionCookie = "__session"

// Middleware admits a request only with a verifying token and stores its
// principal in the request context (principal.From reads it); any other
// request is answered with the contract's 401 before next runs.
//
// The token is the Authorization header's. Without that header, a safe
// request (GET, HEAD) may carry it in Clerk's __session cookie, verified
// exactly alike; a request that changes state never takes the cookie,
// since a browser sends cookies with any site's form, so a cross-site form
// cannot act for a signed-in user. More than one Authorization header, or
// more than one __session cookie, counts as no token, since which of them
// applies would be a guess.
func (v *Verifier) Middleware(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := v.verifyRequest(r)
			if err != nil {
				logger.DebugContext(r.Context(), "request not authenticated",
					slog.String("request_id", httpx.RequestID(r.Context())), slog.Any("err", err))
				httpx.WriteError(w, r, logger, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(principal.WithPrincipal(r.Context(), p)))
		})
	}
}

func (v *Verifier) verifyRequest(r *http.Request) (principal.Principal, error) {
	authorization := r.Header.Values("Authorization")
	switch {
	case len(authorization) == 1:
		return v.Verify(r.Context(), authorization[0])
	case len(authorization) > 1:
		return principal.Principal{}, v.missing(errors.New("more than one Authorization header"))
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return v.verifyCookie(r.Context(), r.CookiesNamed(SessionCookie))
	default:
		return v.Verify(r.Context(), "")
	}
}

// verifyCookie verifies the token of the one __session cookie.
func (v *Verifier) verifyCookie(ctx context.Context, cookies []*http.Cookie) (principal.Principal, error) {
	switch {
	case len(cookies) == 0:
		return v.Verify(ctx, "")
	case len(cookies) > 1:
		return principal.Principal{}, v.missing(errors.New("more than one __session cookie"))
	case cookies[0].Value == "":
		return principal.Principal{}, v.missing(errors.New("empty __session cookie"))
	}
	return v.VerifyToken(ctx, cookies[0].Value)
}
