package store

import (
	"context"
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
// refused even once the rules would let it through; on a document with
// no record yet it makes one that holds only the nonce (the read model
// fills it in when the document arrives, as for a record a command made
// first). The zero Nonce claims nothing (the nonce was claimed before the
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

// checkNonce refuses a replay: n's nonce held by record r.
func checkNonce(r documentDoc, n Nonce) error {
	if n.ID != "" && slices.ContainsFunc(r.Nonces, func(d nonceDoc) bool { return d.ID == n.ID }) {
		return principal.ErrReplayed
	}
	return nil
}

// claimOnly claims n's nonce in record r, read at its revision (exists
// false: there was none), for a command that writes nothing else. lost
// means the record changed since it was read: the command is to be
// decided again.
func (s *Store) claimOnly(ctx context.Context, r documentDoc, exists bool, n Nonce) (lost bool, err error) {
	if n.ID == "" {
		return false, nil
	}
	if !exists {
		_, err := s.documents.InsertOne(ctx, documentDoc{ID: r.ID, Revision: 1, Nonces: n.claimed(nil)})
		if mongox.IsDuplicateKey(err) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("claim nonce on document %s: %w", r.ID, mongox.Classify(err))
		}
		return false, nil
	}
	res, err := s.documents.UpdateOne(ctx, byRecordRevision(r.ID, r.Revision),
		bson.D{{Key: "$set", Value: bson.D{{Key: "nonces", Value: n.claimed(r.Nonces)}, {Key: "revision", Value: r.Revision + 1}}}})
	if err != nil {
		return false, fmt.Errorf("claim nonce on document %s: %w", r.ID, mongox.Classify(err))
	}
	return res.MatchedCount == 0, nil
}
