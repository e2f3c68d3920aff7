// Package nonces is the replay guard of commands: the nonces of the
// gateway's signed principals in a MongoDB collection, so that a signature
// is used once across every replica of a service. It lives beside its one
// user, the campaign service, the only one that takes commands, and apart
// from package principal so that what only signs (the gateway) links no
// database driver.
package nonces

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/principal"
	"go.mongodb.org/mongo-driver/v2/bson"
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
type Store struct {
	coll    *mongo.Collection
	now     func() time.Time
	sweepAt atomic.Int64 // unix nanos of the next sweep
}

// NewStore returns the guard on coll.
func New(coll *mongo.Collection, now func() time.Time) *Store {
	return &Store{coll: coll, now: now}
}

// doc is a claimed nonce. Expires is informative: the sweep goes by
// _id.
type doc struct {
	ID      string    `bson:"_id"`
	Expires time.Time `bson:"expiresAt"`
}

// Claim implements principal.Nonces.
func (s *Store) Claim(ctx context.Context, nonce string, expires time.Time) error {
	s.sweep(ctx)
	_, err := s.coll.InsertOne(ctx, doc{ID: nonce, Expires: expires})
	switch {
	case mongox.IsDuplicateKey(err):
		return principal.ErrReplayed
	case err != nil:
		return fmt.Errorf("claim nonce: %w", mongox.Classify(err))
	}
	return nil
}

// sweep removes the nonces minted more than two TTLs ago, when due: their
// principals expired a TTL ago at least, a margin for clocks that differ.
// A failed sweep waits for the next turn: the claim's own insert tells
// whether the store answers, and what was not swept is swept then.
func (s *Store) sweep(ctx context.Context) {
	now := s.now()
	due := s.sweepAt.Load()
	if now.UnixNano() < due || !s.sweepAt.CompareAndSwap(due, now.Add(principal.TTL).UnixNano()) {
		return
	}
	var zero ulid.ULID
	if err := zero.SetTime(ulid.Timestamp(now.Add(-2 * principal.TTL))); err != nil {
		return // a clock before 1970 or past 10889: nothing to sweep
	}
	cutoff := strings.ToLower(zero.String())
	_, _ = s.coll.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: cutoff}}}})
}
