package api

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/httprate"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
)

// RateLimit limits each account to limit requests per window (a sliding
// window, go-chi/httprate), answering 429 with Retry-After beyond it. It
// runs after authentication: the key is the verified account, so one
// tenant cannot spend another's budget, and unauthenticated floods are
// refused before they cost anything but a token check.
func RateLimit(limit int, window time.Duration, logger *slog.Logger) func(http.Handler) http.Handler {
	return httprate.LimitBy(limit, window,
		func(r *http.Request) (string, error) {
			p, _ := principal.From(r.Context())
			return p.AccountID, nil
		},
		httprate.WithLimitHandler(func(w http.ResponseWriter, r *http.Request) {
			httpx.WriteError(w, r, logger, httpx.ErrTooManyRequests)
		}))
}

// StreamLimit caps the live streams one account may hold open at once.
type StreamLimit struct {
	max  int
	mu   sync.Mutex
	open map[string]int
}

// NewStreamLimit returns a cap of max streams per account.
func NewStreamLimit(max int) *StreamLimit { return &StreamLimit{max: max, open: map[string]int{}} }

func (l *StreamLimit) acquire(account string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[account] >= l.max {
		return false
	}
	l.open[account]++
	return true
}

func (l *StreamLimit) release(account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[account]--; l.open[account] <= 0 {
		delete(l.open, account)
	}
}
