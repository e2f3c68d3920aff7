package mongox

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// ErrClaimed is the claim of an id that was claimed before.
var ErrClaimed = errors.New("already claimed")

// Claims is a collection of single-use ids, one document per id under
// _id = the id: the unique _id makes a second claim fail on whichever
// replica it arrives. Ids are lower-case ULIDs minted with what they
// name, so the ids older than Keep are a range of _id, removed with a
// filter on _id alone by a sweep that the claim finding it due runs, at
// most once per Every. A failed sweep waits for its next turn: the
// claim's own insert tells whether the store answers.
type Claims struct {
	Coll *mongo.Collection
	Now  func() time.Time
	// Keep is how long an id is kept after it was minted; Every bounds
	// how often a claim sweeps.
	Keep, Every time.Duration

	sweepAt atomic.Int64 // unix nanos of the next sweep
}

// Claim inserts doc, which carries _id = the id; ErrClaimed when the id
// was claimed before.
func (c *Claims) Claim(ctx context.Context, doc any) error {
	c.sweep(ctx)
	_, err := c.Coll.InsertOne(ctx, doc)
	switch {
	case IsDuplicateKey(err):
		return ErrClaimed
	case err != nil:
		return Classify(err)
	}
	return nil
}

func (c *Claims) sweep(ctx context.Context) {
	now := c.Now()
	due := c.sweepAt.Load()
	if now.UnixNano() < due || !c.sweepAt.CompareAndSwap(due, now.Add(c.Every).UnixNano()) {
		return
	}
	var zero ulid.ULID
	if err := zero.SetTime(ulid.Timestamp(now.Add(-c.Keep))); err != nil {
		return // a clock before 1970 or past 10889: nothing to sweep
	}
	cutoff := strings.ToLower(zero.String())
	_, _ = c.Coll.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: cutoff}}}})
}
