// Package idempotency remembers, per account and Idempotency-Key, the
// first answer to a command, so that a client retrying a request (after a
// timeout, twice at once, or after the service crashed mid-request) gets
// that answer again instead of a second action. The claim on a key is
// taken before the command runs; the command itself carries the key (the
// campaign id chosen at the claim, the opt-out's key), so a claim left
// pending by a crash can be resolved from what the command wrote.
//
// An ambiguous failure never frees a key. A command that failed after it
// may have written (a store reply lost past the deadline, a timeout, a
// failover) leaves its claim Interrupted, and the next request with the key
// recovers at once: it finds what the first attempt wrote and answers that,
// or proves nothing was written and runs the command. Only a failure that
// proves nothing was written (see NothingWritten) releases the claim.
package idempotency

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/services/campaign/internal/keylock"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Collection holds the claims.
const Collection = "idempotency"

// Window is how long a key is remembered.
const Window = 24 * time.Hour

// States of a claim.
const (
	statePending     = "pending"
	stateInterrupted = "interrupted" // failed after a write may have happened
	stateDone        = "done"
)

// Errors of Begin.
var (
	ErrMismatch   = errors.New("idempotency key reused with a different request")
	ErrInProgress = errors.New("a request with this idempotency key is in progress")
)

// Record is a claim on a key.
type Record struct {
	ID          string    `bson:"_id"`
	Fingerprint string    `bson:"fingerprint"`
	State       string    `bson:"state"`
	CampaignID  string    `bson:"campaignId"`
	Status      int       `bson:"status,omitempty"`
	Body        string    `bson:"body,omitempty"`
	CreatedAt   time.Time `bson:"createdAt"`
	UpdatedAt   time.Time `bson:"updatedAt"`
}

// Outcome says what Begin found.
type Outcome int

// Outcomes of Begin.
const (
	// Fresh: the key is new (or expired); run the command, then Finish.
	Fresh Outcome = iota
	// Replay: the command ran; answer Record.Status and Record.Body.
	Replay
	// Recover: the first attempt failed after it may have written (its
	// claim was interrupted), or left its claim pending long ago (a crash
	// mid-request); the command may or may not have run. Run it in its
	// idempotent form (Record.CampaignID, the key), then Finish.
	Recover
)

// Store keeps claims in MongoDB.
type Store struct {
	coll *mongo.Collection
	now  func() time.Time
	// locks serializes the changes of one claim in the process; the
	// filter on the claim's version (see unchanged) orders them across
	// processes.
	locks *keylock.Map
	// Stale is how long a claim may stay pending before it is presumed
	// abandoned: longer than any request may take.
	Stale time.Duration
	// Wait bounds how long a duplicate waits for the first request.
	Wait time.Duration
}

// New returns a Store on db.
func New(db *mongo.Database, now func() time.Time) *Store {
	return &Store{coll: db.Collection(Collection), now: now, locks: keylock.New(), Stale: 30 * time.Second, Wait: 10 * time.Second}
}

// Fingerprint identifies a request: what it asks, not how it is spelled
// on the wire (the gateway normalizes bodies before they get here).
func Fingerprint(method, path string, body []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", method, path)
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Begin claims key for account's request. campaignID is the campaign the
// command will act on (for a start, the id it will create).
func (s *Store) Begin(ctx context.Context, account, key, fingerprint, campaignID string) (Record, Outcome, error) {
	now := s.now().UTC().Truncate(time.Millisecond)
	rec := Record{ID: account + "/" + key, Fingerprint: fingerprint, State: statePending, CampaignID: campaignID, CreatedAt: now, UpdatedAt: now}
	_, err := s.coll.InsertOne(ctx, rec)
	if err == nil {
		return rec, Fresh, nil
	}
	if !mongox.IsDuplicateKey(err) {
		return Record{}, 0, fmt.Errorf("claim idempotency key: %w", mongox.Classify(err))
	}
	// Waiting is measured in real time, whatever clock the claims use.
	deadline := time.Now().Add(s.Wait)
	for {
		var held Record
		err := s.coll.FindOne(ctx, bson.D{{Key: "_id", Value: rec.ID}}).Decode(&held)
		switch {
		case errors.Is(err, mongo.ErrNoDocuments):
			// Swept away meanwhile: claim it afresh.
			return s.Begin(ctx, account, key, fingerprint, campaignID)
		case err != nil:
			return Record{}, 0, fmt.Errorf("read idempotency key: %w", mongox.Classify(err))
		}
		now := s.now().UTC().Truncate(time.Millisecond)
		switch {
		case now.Sub(held.CreatedAt) >= Window:
			// Expired: the key is new again.
			if s.takeOver(ctx, held, rec) {
				return rec, Fresh, nil
			}
		case held.Fingerprint != fingerprint:
			return held, 0, ErrMismatch
		case held.State == stateDone:
			return held, Replay, nil
		case held.State == stateInterrupted || now.Sub(held.UpdatedAt) >= s.Stale:
			next := held
			next.State, next.UpdatedAt = statePending, after(held.UpdatedAt, now)
			if s.takeOver(ctx, held, next) {
				return next, Recover, nil
			}
		case time.Now().After(deadline):
			return held, 0, ErrInProgress
		}
		select {
		case <-ctx.Done():
			return Record{}, 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// takeOver replaces held by next if nobody changed it since it was read.
func (s *Store) takeOver(ctx context.Context, held, next Record) bool {
	unlock, err := s.locks.Lock(ctx, held.ID)
	if err != nil {
		return false
	}
	defer unlock()
	res, err := s.coll.ReplaceOne(ctx, unchanged(held), next)
	return err == nil && res.MatchedCount == 1
}

// unchanged is the filter on rec as it was read or written: every change
// of a claim moves updatedAt forward (see after), so it names one version.
func unchanged(rec Record) bson.D {
	return bson.D{{Key: "_id", Value: rec.ID}, {Key: "state", Value: rec.State}, {Key: "updatedAt", Value: rec.UpdatedAt}}
}

// after is now, or just after prev when the clock has not moved past it.
func after(prev, now time.Time) time.Time {
	if !now.After(prev) {
		return prev.Add(time.Millisecond)
	}
	return now
}

// Finish records the answer to the claimed request.
func (s *Store) Finish(ctx context.Context, rec Record, status int, body []byte) error {
	unlock, err := s.locks.Lock(ctx, rec.ID)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = s.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: rec.ID}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "state", Value: stateDone}, {Key: "status", Value: status}, {Key: "body", Value: string(body)},
		{Key: "updatedAt", Value: s.now().UTC().Truncate(time.Millisecond)},
	}}})
	if err != nil {
		return fmt.Errorf("finish idempotency key: %w", mongox.Classify(err))
	}
	return nil
}

// Interrupt marks the claim of a command that failed after it may have
// written, so that the next request with the key recovers at once instead
// of waiting for the claim to go stale. If the mark fails too, the claim
// stays pending and is recovered once stale.
func (s *Store) Interrupt(ctx context.Context, rec Record) error {
	unlock, err := s.locks.Lock(ctx, rec.ID)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = s.coll.UpdateOne(ctx, unchanged(rec), bson.D{{Key: "$set", Value: bson.D{
		{Key: "state", Value: stateInterrupted},
		{Key: "updatedAt", Value: after(rec.UpdatedAt, s.now().UTC().Truncate(time.Millisecond))},
	}}})
	if err != nil {
		return fmt.Errorf("interrupt idempotency key: %w", mongox.Classify(err))
	}
	return nil
}

// Release deletes a fresh claim whose command is proven to have written
// nothing (it failed with NothingWritten), so that a retry runs it afresh.
// A recovered claim is never released: its first attempt may have
// written. If the release fails, the claim goes stale and a retry
// recovers it.
func (s *Store) Release(ctx context.Context, rec Record) {
	unlock, err := s.locks.Lock(ctx, rec.ID)
	if err != nil {
		return
	}
	defer unlock()
	_, _ = s.coll.DeleteOne(ctx, unchanged(rec))
}

// NothingWritten marks err as a failure that happened before the command
// attempted any write: the one kind of failure after which a claim may be
// released. Commands wrap only what they can prove; everything else keeps
// the claim.
func NothingWritten(err error) error { return nothingWritten{err} }

// IsNothingWritten reports whether err was marked by NothingWritten.
func IsNothingWritten(err error) bool {
	var nw nothingWritten
	return errors.As(err, &nw)
}

type nothingWritten struct{ err error }

func (e nothingWritten) Error() string { return e.err.Error() }
func (e nothingWritten) Unwrap() error { return e.err }

// Sweep deletes the claims older than the window. Expiry is by query, not
// by a TTL index, which the embedded store lacks.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	res, err := s.coll.DeleteMany(ctx, bson.D{{Key: "createdAt", Value: bson.D{{Key: "$lt", Value: s.now().UTC().Add(-Window)}}}})
	if err != nil {
		return 0, mongox.Classify(err)
	}
	return res.DeletedCount, nil
}
