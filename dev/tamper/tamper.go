// Package tamper does to an account's compliance log what whoever holds
// the compliance database can (spec/transparency.md, "What a careful
// rewrite must run into"): edit an entry, re-seal it and every later one
// with the documented formula, recompute the head record and every stored
// hash of the account's Merkle tree over the rewritten entries, and, to
// get past the service's own check, delete the account's stored
// checkpoints. The service's tests and the e2e suite attack the log with
// it, so that the attack is written once.
//
// It writes the documents as the compliance service stores them; the
// collection names below are the service's (its tests check that they
// match).
package tamper

import (
	"context"
	"fmt"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/mod/sumdb/tlog"
)

// Collections of the compliance database the attack writes, besides
// auditlog.EntriesCollection and auditlog.HeadsCollection.
const (
	// TreeHashes holds one document per leaf: the stored hashes
	// tlog.StoredHashes gives for it. Each account's tree size hint is
	// the size field of its document of auditlog.HeadsCollection.
	TreeHashes = "tree_hashes"
	// Checkpoints, Cosignatures and CheckpointHeads hold the signed
	// checkpoints, the witnesses' cosignatures and the hint of each
	// account's latest checkpoint.
	Checkpoints     = "checkpoints"
	Cosignatures    = "checkpoint_cosignatures"
	CheckpointHeads = "checkpoint_heads"
)

// record is a leaf's stored hashes, as the service stores them:
// {_id: "<account>/<stored hash index of the leaf, 12 digits>", accountId,
// leaf, hashes}.
type record struct {
	ID      string   `bson:"_id"`
	Account string   `bson:"accountId"`
	Leaf    int64    `bson:"leaf"`
	Hashes  [][]byte `bson:"hashes"`
}

// RecordID is the _id of account's stored hashes of leaf.
func RecordID(account string, leaf int64) string {
	return fmt.Sprintf("%s/%012d", account, tlog.StoredHashIndex(0, leaf))
}

// Rewrite edits entry seq of account with edit, re-seals it and every
// later entry, and recomputes the head record and the stored tree over
// the rewritten entries, so that the chain and the tree verify again. It
// returns the seq of the last entry. The entries must be there from 1 to
// the last without a gap.
func Rewrite(ctx context.Context, db *mongo.Database, account string, seq int64, edit func(*auditlog.Entry)) (int64, error) {
	entries := db.Collection(auditlog.EntriesCollection)
	cur, err := entries.Find(ctx, bson.D{{Key: seqlog.FieldAccount, Value: account}},
		options.Find().SetSort(bson.D{{Key: seqlog.FieldSeq, Value: 1}}))
	if err != nil {
		return 0, err
	}
	var docs []auditlog.Doc
	if err := cur.All(ctx, &docs); err != nil {
		return 0, err
	}
	head := int64(len(docs))
	if seq < 1 || seq > head {
		return 0, fmt.Errorf("%s has %d entries, none at %d", account, head, seq)
	}
	var (
		hashes []tlog.Hash // every stored hash of the tree, by stored hash index
		prev   = auditlog.GenesisHash
	)
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	for i, d := range docs {
		e, err := d.Entry()
		if err != nil {
			return 0, err
		}
		if e.Seq != int64(i+1) {
			return 0, fmt.Errorf("%s: entry %d where %d should be", account, e.Seq, i+1)
		}
		if e.Seq >= seq {
			if e.Seq == seq {
				edit(&e)
			}
			if err := auditlog.Seal(&e, prev); err != nil {
				return 0, err
			}
			nd, err := auditlog.ToDoc(e, seqlog.Key(account, e.Seq))
			if err != nil {
				return 0, err
			}
			if _, err := entries.ReplaceOne(ctx, bson.D{{Key: "_id", Value: nd.ID}}, nd); err != nil {
				return 0, err
			}
		}
		prev = e.Hash
		leaf, err := auditlog.LeafData(e)
		if err != nil {
			return 0, err
		}
		hs, err := tlog.StoredHashes(int64(i), leaf, reader)
		if err != nil {
			return 0, err
		}
		hashes = append(hashes, hs...)
		if e.Seq < seq {
			continue // its stored hashes depend on the leaves up to it only
		}
		r := record{ID: RecordID(account, int64(i)), Account: account, Leaf: int64(i)}
		for _, h := range hs {
			r.Hashes = append(r.Hashes, h[:])
		}
		if _, err := db.Collection(TreeHashes).ReplaceOne(ctx, bson.D{{Key: "_id", Value: r.ID}}, r,
			options.Replace().SetUpsert(true)); err != nil {
			return 0, err
		}
	}
	// The head record holds the seq of the log's last entry and its tree's
	// size; both stay what they were, written again for completeness.
	if _, err := db.Collection(auditlog.HeadsCollection).UpdateOne(ctx, bson.D{{Key: "_id", Value: account}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "seq", Value: head}, {Key: "size", Value: head}}}},
		options.UpdateOne().SetUpsert(true)); err != nil {
		return 0, err
	}
	return head, nil
}

// DeleteCheckpoints deletes account's stored checkpoints, their
// cosignatures and the hint of its latest.
func DeleteCheckpoints(ctx context.Context, db *mongo.Database, account string) error {
	for _, c := range []string{Checkpoints, Cosignatures} {
		if _, err := db.Collection(c).DeleteMany(ctx, bson.D{{Key: "accountId", Value: account}}); err != nil {
			return err
		}
	}
	_, err := db.Collection(CheckpointHeads).DeleteOne(ctx, bson.D{{Key: "_id", Value: account}})
	return err
}
