package httpx

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// NewRouter returns a chi router with the middleware every service runs, in
// order: the trace span, request id (so every response carries one, errors
// included), metrics and access log, panic recovery, and a deadline on the request's
// context. Unknown routes and methods answer with the JSON error body.
func NewRouter(logger *slog.Logger, metrics *HTTPMetrics, timeout time.Duration) chi.Router {
	r := chi.NewRouter()
	r.Use(Trace, RequestIDs, metrics.Observe(logger), Recover(logger))
	if timeout > 0 {
		r.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx, cancel := context.WithTimeout(r.Context(), timeout)
				defer cancel()
				next.ServeHTTP(w, r.WithContext(ctx))
			})
		})
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { WriteError(w, r, logger, ErrNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { WriteError(w, r, logger, ErrMethodNotAllowed) })
	return r
}
