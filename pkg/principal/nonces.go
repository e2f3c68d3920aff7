package principal

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Nonces remembers the nonces of the principals a service accepted, for as
// long as those principals could still verify.
type Nonces interface {
	// Claim records nonce, whose principal expires at expires; it returns
	// ErrReplayed when the nonce was claimed before.
	Claim(ctx context.Context, nonce string, expires time.Time) error
}

// MemoryNonces holds the nonces in this process. It is the guard of reads:
// a read changes nothing, so a replay sent to another replica within the
// minute can at most read again what the captured request read, and
// someone who captured the request on the internal network saw its answer
// too. A store write on every read (and for every SSE stream) would cost
// more than that is worth.
type MemoryNonces struct {
	now func() time.Time

	mu      sync.Mutex
	seen    map[string]time.Time
	pruneAt time.Time
}

// NewMemoryNonces returns an empty guard reading time from now.
func NewMemoryNonces(now func() time.Time) *MemoryNonces {
	return &MemoryNonces{now: now, seen: map[string]time.Time{}}
}

// Claim implements Nonces.
func (m *MemoryNonces) Claim(_ context.Context, nonce string, expires time.Time) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.After(m.pruneAt) {
		// What expired can no longer verify: forget it, at most twice per
		// TTL, so that the map holds about a TTL of requests.
		for n, exp := range m.seen {
			if now.After(exp) {
				delete(m.seen, n)
			}
		}
		m.pruneAt = now.Add(TTL / 2)
	}
	if _, ok := m.seen[nonce]; ok {
		return ErrReplayed
	}
	m.seen[nonce] = expires
	return nil
}

// StoreNonces holds the nonces in a MongoDB collection, one document per
// nonce under _id = the nonce: the unique _id makes a second claim fail on
// whichever replica it arrives. It is the guard of commands.
//
// Nonces are ULIDs minted at signing, a TTL before their principal
// expires (Verify checks it), so what can no longer verify is a range of
// _id: a sweep, at most once per TTL and run by the claim that finds it
// due, removes it with a filter on _id alone.
type StoreNonces struct {
	coll    *mongo.Collection
	now     func() time.Time
	sweepAt atomic.Int64 // unix nanos of the next sweep
}

// NewStoreNonces returns the guard on coll.
func NewStoreNonces(coll *mongo.Collection, now func() time.Time) *StoreNonces {
	return &StoreNonces{coll: coll, now: now}
}

// nonceDoc is a claimed nonce. Expires is informative: the sweep goes by
// _id.
type nonceDoc struct {
	ID      string    `bson:"_id"`
	Expires time.Time `bson:"expiresAt"`
}

// Claim implements Nonces.
func (s *StoreNonces) Claim(ctx context.Context, nonce string, expires time.Time) error {
	s.sweep(ctx)
	_, err := s.coll.InsertOne(ctx, nonceDoc{ID: nonce, Expires: expires})
	switch {
	case mongox.IsDuplicateKey(err):
		return ErrReplayed
	case err != nil:
		return fmt.Errorf("claim nonce: %w", mongox.Classify(err))
	}
	return nil
}

// sweep removes the nonces minted more than two TTLs ago, when due: their
// principals expired a TTL ago at least, a margin for clocks that differ.
// A failed sweep waits for the next turn: the claim's own insert tells
// whether the store answers, and what was not swept is swept then.
func (s *StoreNonces) sweep(ctx context.Context) {
	now := s.now()
	due := s.sweepAt.Load()
	if now.UnixNano() < due || !s.sweepAt.CompareAndSwap(due, now.Add(TTL).UnixNano()) {
		return
	}
	var zero ulid.ULID
	if err := zero.SetTime(ulid.Timestamp(now.Add(-2 * TTL))); err != nil {
		return // a clock before 1970 or past 10889: nothing to sweep
	}
	cutoff := strings.ToLower(zero.String())
	_, _ = s.coll.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: cutoff}}}})
}
