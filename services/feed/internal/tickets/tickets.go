// Package tickets records the stream tickets the feed opened a stream
// with, so that a ticket opens one stream only, whichever feed instance
// it reaches. The gateway mints and verifies tickets (their signature and
// expiry) and holds no state; it passes a verified ticket's id on in the
// stream's signed query, and the feed claims that id in its store, where
// the unique _id refuses a second claim from any instance.
package tickets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Collection is the feed's collection of used tickets.
const Collection = "stream_tickets"

// Param is the stream's query parameter that holds a ticket's id.
const Param = "ticket"

// Keep is how long a used ticket is remembered after it was minted: far
// beyond its 60 seconds, so that gateway and feed clocks some minutes
// apart still never let a ticket outlive its record.
const Keep = 10 * time.Minute

// sweepEvery bounds how often a claim sweeps the old records.
const sweepEvery = time.Minute

// ErrUsed is the claim of a ticket that was claimed before.
var ErrUsed = errors.New("stream ticket already used")

// Store holds the used tickets, one document per ticket under _id = its
// id. Ids are ULIDs minted with the ticket, so what is older than Keep is
// a range of _id, swept with a filter on _id alone (mongox.Claims).
type Store struct {
	claims *mongox.Claims
	now    func() time.Time
}

// New returns the store on coll.
func New(coll *mongo.Collection, now func() time.Time) *Store {
	return &Store{claims: &mongox.Claims{Coll: coll, Now: now, Keep: Keep, Every: sweepEvery}, now: now}
}

type doc struct {
	ID     string    `bson:"_id"`
	UsedAt time.Time `bson:"usedAt"`
}

// Claim records the use of ticket id; ErrUsed when it was used before.
func (s *Store) Claim(ctx context.Context, id string) error {
	err := s.claims.Claim(ctx, doc{ID: id, UsedAt: s.now()})
	switch {
	case errors.Is(err, mongox.ErrClaimed):
		return ErrUsed
	case err != nil:
		return fmt.Errorf("claim stream ticket: %w", err)
	}
	return nil
}

// Middleware claims the ticket of a stream opened with one (the gateway
// names its id in the query) before next opens it, and takes the id out
// of the query next sees. A used ticket, or an id that is no ticket's, is
// the contract's 401 for an invalid token, which the gateway relays; a
// request without a ticket passes as it is.
func (s *Store) Middleware(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			ids, ok := q[Param]
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			if err := s.claim(r.Context(), ids); err != nil {
				httpx.WriteError(w, r, logger, err)
				return
			}
			q.Del(Param)
			r2 := r.Clone(r.Context())
			r2.URL.RawQuery = q.Encode()
			next.ServeHTTP(w, r2)
		})
	}
}

func (s *Store) claim(ctx context.Context, ids []string) error {
	if len(ids) != 1 {
		return httpx.ErrInvalidToken.Wrap(errors.New("more than one stream ticket"))
	}
	id, err := ulid.ParseStrict(ids[0])
	if err != nil || strings.ToLower(id.String()) != ids[0] {
		return httpx.ErrInvalidToken.Wrap(fmt.Errorf("stream ticket id %q is not a lowercase ULID", ids[0]))
	}
	switch err := s.Claim(ctx, ids[0]); {
	case errors.Is(err, ErrUsed):
		return httpx.ErrInvalidToken.Wrap(err)
	default:
		return err
	}
}
