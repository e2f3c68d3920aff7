// Package nonces is the replay guard of commands: the nonces of the
// gateway's signed principals in a MongoDB collection, so that a signature
// is used once across every replica of a service. It lives beside its one
// user, the campaign service, the only one that takes commands, and apart
// from package principal so that what only signs (the gateway) links no
// database driver.
package nonces

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/principal"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Store holds the nonces in a MongoDB collection, one document per
// nonce under _id = the nonce: the unique _id makes a second claim fail on
// whichever replica it arrives. It is the guard of commands.
//
// Nonces are ULIDs minted at signing, a TTL before their principal
// expires (Verify checks it), so what can no longer verify is a range of
// _id: a sweep, at most once per TTL and run by the claim that finds it
// due, removes it with a filter on _id alone.
type Store struct{ claims *mongox.Claims }

// New returns the guard on coll. It sweeps, at most once per TTL, the
// nonces minted more than two TTLs ago: their principals expired a TTL ago
// at least, a margin for clocks that differ.
func New(coll *mongo.Collection, now func() time.Time) *Store {
	return &Store{claims: &mongox.Claims{Coll: coll, Now: now, Keep: 2 * principal.TTL, Every: principal.TTL}}
}

// doc is a claimed nonce. Expires is informative: the sweep goes by
// _id.
type doc struct {
	ID      string    `bson:"_id"`
	Expires time.Time `bson:"expiresAt"`
}

// Claim implements principal.Nonces.
func (s *Store) Claim(ctx context.Context, nonce string, expires time.Time) error {
	err := s.claims.Claim(ctx, doc{ID: nonce, Expires: expires})
	switch {
	case errors.Is(err, mongox.ErrClaimed):
		return principal.ErrReplayed
	case err != nil:
		return fmt.Errorf("claim nonce: %w", err)
	}
	return nil
}
