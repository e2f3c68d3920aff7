package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
)

// Middleware admits a request only with a verifying token and stores its
// principal in the request context (principal.From reads it); any other
// request is answered with the contract's 401 before next runs. A request
// with more than one Authorization header counts as having no
// "Bearer <token>" header, since which of them applies would be a guess.
func (v *Verifier) Middleware(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := v.verifyRequest(r.Context(), r.Header.Values("Authorization"))
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

func (v *Verifier) verifyRequest(ctx context.Context, authorization []string) (principal.Principal, error) {
	switch len(authorization) {
	case 0:
		return v.Verify(ctx, "")
	case 1:
		return v.Verify(ctx, authorization[0])
	default:
		return principal.Principal{}, v.missing(errors.New("more than one Authorization header"))
	}
}
