// Package browser holds what the gateway does for clients that run in a
// web browser: the CORS policy that lets the platform's own front-ends
// call the API from their origins.
package browser

import (
	"net/http"

	"github.com/rs/cors"
)

// MaxAge is how long a browser may cache a preflight's answer: ten
// minutes, so that an origin taken off the list stops being served soon,
// while a page's calls are not each preceded by a preflight.
const MaxAge = 600

// AllowedHeaders are the request headers the routes read.
var AllowedHeaders = []string{"Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"}

// ExposedHeaders are the response headers a page may read: the request id,
// the rate limit's (go-chi/httprate's names) and Retry-After, and the mark
// of an idempotent replay.
var ExposedHeaders = []string{"X-Request-Id", "Retry-After",
	"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Idempotent-Replayed"}

// AllowedMethods are the methods of the public routes.
var AllowedMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost}

// CORS returns the middleware that answers preflights and marks the
// answers to the listed origins as readable by them (exact matches, with
// credentials so that Clerk's __session cookie can travel). A request from
// any other origin gets no CORS header at all, so the browser keeps the
// answer from its page; a preflight is answered before authentication,
// since browsers send it without credentials. With no origins there is no
// policy: no request gets a CORS header (the library's default would be
// every origin).
func CORS(origins []string) func(http.Handler) http.Handler {
	if len(origins) == 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	c := cors.New(cors.Options{
		AllowedOrigins:   origins,
		AllowedMethods:   AllowedMethods,
		AllowedHeaders:   AllowedHeaders,
		ExposedHeaders:   ExposedHeaders,
		AllowCredentials: true,
		MaxAge:           MaxAge,
	})
	return func(next http.Handler) http.Handler {
		policy := c.Handler(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A preflight from an origin off the list is not answered by
			// the policy: it reaches the routes, as it would with none.
			if r.Method == http.MethodOptions && !c.OriginAllowed(r) {
				next.ServeHTTP(w, r)
				return
			}
			policy.ServeHTTP(w, r)
		})
	}
}
