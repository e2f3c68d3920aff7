package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/principal"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Nonce is the single-use nonce of the principal that signed a command,
// claimed by the command in the write of the document's record that
// carries its effect (see principal.Signer.ClaimInCommand) rather than in
// a write of its own. The record keeps the nonces of its commands until
// their principals can no longer verify; a command that finds its nonce
// there is a replay (principal.ErrReplayed). A command that writes
// nothing still claims its nonce in the record, so that a replay is
// refused even once the rules would let it through.
//
// A command on a document with no record claims its nonce in the nonce
// store instead (package nonces, the guard of the other commands): a
// record is made only by the read model or by a command that starts a
// campaign, never for a nonce alone, so that requests on unknown
// documents leave nothing behind in the documents collection. Its replay
// may come once the record exists: a record made less than a TTL before
// the nonce was signed (a TTL being the margin for clocks that differ)
// may have been missing when the nonce was first used, so a command on
// it claims its nonce in the nonce store too, once per command. Records
// are that young only in the minute or so after the read model first
// applies their document.
//
// The zero Nonce claims nothing (the nonce was claimed before the
// command ran).
type Nonce struct {
	ID      string
	Expires time.Time
}

// nonceDoc is a nonce a command of the record claimed.
type nonceDoc struct {
	ID      string    `bson:"id"`
	Expires time.Time `bson:"expiresAt"`
}

// claimed returns held with n's nonce added, less the nonces whose
// principals expired a TTL before n's was signed: those can no longer
// verify anywhere, a TTL being the margin for clocks that differ.
func (n Nonce) claimed(held []nonceDoc) []nonceDoc {
	if n.ID == "" {
		return held
	}
	cutoff := n.Expires.Add(-2 * principal.TTL)
	out := make([]nonceDoc, 0, len(held)+1)
	for _, d := range held {
		if d.Expires.After(cutoff) {
			out = append(out, d)
		}
	}
	return append(out, nonceDoc{ID: n.ID, Expires: n.Expires.UTC()})
}

// pruneAt is how many of a record's nonces must have expired before a
// claim writes the list without them; until then a claim pushes its
// nonce alone, and the expired ones (a few dozen bytes each) wait.
const pruneAt = 8

// claim adds to a record write's set and push the claim of n's nonce in
// a record holding held: n pushed, or the list set anew without the
// expired ones once pruneAt of them expired (or when none is held: a
// list stored as null takes no $push).
func (n Nonce) claim(held []nonceDoc, set, push bson.D) (bson.D, bson.D) {
	if n.ID == "" {
		return set, push
	}
	kept := n.claimed(held)
	if len(held) == 0 || len(held)+1-len(kept) >= pruneAt {
		return append(set, bson.E{Key: "nonces", Value: kept}), push
	}
	return set, append(push, bson.E{Key: "nonces", Value: nonceDoc{ID: n.ID, Expires: n.Expires.UTC()}})
}

// checkNonce refuses a replay: n's nonce held by record r.
func checkNonce(r documentDoc, n Nonce) error {
	if n.ID != "" && slices.ContainsFunc(r.Nonces, func(d nonceDoc) bool { return d.ID == n.ID }) {
		return principal.ErrReplayed
	}
	return nil
}

// young reports whether record r may be younger than n's nonce, with a
// TTL's margin: r may have been missing when the nonce was first used
// (see Nonce). A record without its creation time was made before
// records held it, long ago.
func (r documentDoc) young(n Nonce) bool {
	signed := n.Expires.Add(-principal.TTL)
	return n.ID != "" && r.CreatedAt != nil && r.CreatedAt.After(signed.Add(-principal.TTL))
}

// guardNonce claims n's nonce in the nonce store (see Nonce): the
// command is a replay (principal.ErrReplayed) if it was claimed there.
func (s *Store) guardNonce(ctx context.Context, n Nonce) error {
	if n.ID == "" {
		return nil
	}
	err := s.guard.Claim(ctx, n.ID, n.Expires)
	if err != nil && !errors.Is(err, principal.ErrReplayed) {
		// Whether the claim landed or not, the command wrote nothing.
		return Unwritten(err)
	}
	return err
}

// claimOnly claims n's nonce in record r, read at its revision (exists
// false: there was none, and the nonce store takes the claim), for a
// command that writes nothing else. lost means the record changed since
// it was read: the command is to be decided again.
func (s *Store) claimOnly(ctx context.Context, r documentDoc, exists bool, n Nonce) (lost bool, err error) {
	if n.ID == "" {
		return false, nil
	}
	if !exists {
		return false, s.guardNonce(ctx, n)
	}
	res, err := s.documents.UpdateOne(ctx, byRecordRevision(r.ID, r.Revision),
		bson.D{{Key: "$set", Value: bson.D{{Key: "nonces", Value: n.claimed(r.Nonces)}, {Key: "revision", Value: r.Revision + 1}}}})
	if err != nil {
		return false, fmt.Errorf("claim nonce on document %s: %w", r.ID, mongox.Classify(err))
	}
	return res.MatchedCount == 0, nil
}
