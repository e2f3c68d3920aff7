// Package app holds the campaign service's use cases: what the service can
// do, whoever asks. Each command reads and writes through the store (one
// single-document write carrying its events), hands the events to the
// relay and logs, in one place; the HTTP API and the documents consumer
// both call it, neither calls the other. Commands sent with an
// Idempotency-Key run at most once per key (see once).
package app

import (
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// Relay takes freshly written events for publishing.
type Relay interface {
	// Enqueue takes events written to the outbox of documentID's record.
	Enqueue(documentID string, msgs ...events.Message)
	// Missed says events may wait in the outbox that nothing handed
	// the relay (a command recovered from an interrupted attempt).
	Missed()
}

// Config is what Campaigns is built from.
type Config struct {
	Store *store.Store
	Relay Relay
	// Claims remembers answers per Idempotency-Key; nil turns keys off.
	Claims *idempotency.Store
	NewID  func(prefix string) string
	Now    func() time.Time
	Logger *slog.Logger
	// Registerer takes the use cases' metrics.
	Registerer prometheus.Registerer
}

// Campaigns is what the campaign service can do.
type Campaigns struct {
	store   *store.Store
	relay   Relay
	claims  *idempotency.Store
	newID   func(prefix string) string
	now     func() time.Time
	logger  *slog.Logger
	ended   prometheus.Counter
	contact *ContactMetrics
}

// New returns the use cases on cfg.
func New(cfg Config) *Campaigns {
	ended := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rcm_campaigns_ended_total", Help: "Campaigns ended because their document's loan left BEHIND.",
	})
	cfg.Registerer.MustRegister(ended)
	return &Campaigns{
		store: cfg.Store, relay: cfg.Relay, claims: cfg.Claims,
		newID: cfg.NewID, now: cfg.Now, logger: cfg.Logger, ended: ended,
		contact: NewContactMetrics(cfg.Registerer),
	}
}

// Request is how a command arrived: who sent it and, when it came with an
// Idempotency-Key, the key and a fingerprint of what it asks (see
// idempotency.Fingerprint).
type Request struct {
	Principal   principal.Principal
	Key         string
	Fingerprint string
	// ClaimNonce says the command claims the principal's nonce in its
	// own write: Verify left it unclaimed (principal.Signer.ClaimInCommand).
	ClaimNonce bool
}

// nonce is the nonce the command is to claim in its write, if any.
func (r Request) nonce() store.Nonce {
	if !r.ClaimNonce {
		return store.Nonce{}
	}
	return store.Nonce{ID: r.Principal.Nonce, Expires: time.Unix(r.Principal.Expires, 0)}
}

func actorOf(p principal.Principal) events.Actor {
	return events.Actor{Type: events.ActorUser, ID: p.UserID, SessionID: p.SessionID}
}

// contractError maps the rules' errors to the contract. An unavailable
// store needs no mapping: httpx answers every temporary failure with 503.
func contractError(err error, notFound *httpx.Error) error {
	switch {
	case errors.Is(err, campaign.ErrInvalid):
		return httpx.ErrInvalidBody.Wrap(err).With("reason", err.Error())
	case errors.Is(err, campaign.ErrNoChannel):
		return httpx.ErrNoChannel
	case errors.Is(err, campaign.ErrLoanRule):
		return httpx.ErrLoanRule
	case errors.Is(err, campaign.ErrAllRevoked):
		return httpx.ErrAllOptedOut
	case errors.Is(err, campaign.ErrNotFound):
		return notFound
	case errors.Is(err, principal.ErrReplayed):
		return httpx.ErrForbidden.Wrap(err)
	case errors.Is(err, store.ErrConflict):
		return httpx.ErrUnavailable.Wrap(err)
	default:
		return err
	}
}
