// Package logseed builds what the compliance service stores for an
// account's log, in its own layout (pkg/auditlog, pkg/seqlog and
// services/compliance/internal/tree): the hash-chained entries, the
// records of the account's Merkle tree, the head hint and the tree's size
// hint, so that a benchmark can fill the service's database straight
// through the driver, far faster than through the consumer. The ledger's
// tests append the same events through the service and check that these
// documents are exactly the ones it wrote, field for field, and that the
// service verifies and proves a seeded log, so the layout cannot drift
// from the service's unnoticed.
package logseed

import (
	"context"
	"encoding/json"
	"fmt"
	"math/bits"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/mod/sumdb/tlog"
)

// Where the compliance service keeps its log.
const (
	Database          = "rcm_compliance"
	EntriesCollection = auditlog.EntriesCollection
	HeadsCollection   = auditlog.HeadsCollection
	HashesCollection  = "tree_hashes"
)

// Chain is one account's log as it grows entry by entry from seq 1: the
// hash chain's last link and the right edge of its tree.
type Chain struct {
	account string
	seq     int64
	prev    string
	edge    map[int64]tlog.Hash
}

// NewChain returns the empty log of account.
func NewChain(account string) *Chain {
	return &Chain{account: account, prev: auditlog.GenesisHash, edge: map[int64]tlog.Hash{}}
}

// Seq is the seq of the last entry added.
func (c *Chain) Seq() int64 { return c.seq }

// Add returns the next entry, the event e with its JSON data exactly as
// the service received it, recorded at recordedAt (events.FormatTime),
// and the record of its leaf in the tree, as the service stores them.
func (c *Chain) Add(e events.Event, data []byte, recordedAt string) (entry, record any, err error) {
	en := auditlog.Entry{
		EventID: e.EventID, AccountID: c.account, Seq: c.seq + 1, EventType: e.EventType,
		DocumentID: e.DocumentID, CampaignID: e.CampaignID,
		Actor: auditlog.Actor{Type: e.Actor.Type, ID: e.Actor.ID, SessionID: e.Actor.SessionID},
		Data:  json.RawMessage(data), OccurredAt: e.OccurredAt, RecordedAt: recordedAt,
	}
	leaf, err := auditlog.SealLeaf(&en, c.prev, nil)
	if err != nil {
		return nil, nil, err
	}
	doc, err := auditlog.ToDoc(en, seqlog.Key(c.account, en.Seq))
	if err != nil {
		return nil, nil, err
	}
	n := c.seq // the leaf index
	hs, err := tlog.StoredHashes(n, leaf, c)
	if err != nil {
		return nil, nil, fmt.Errorf("tree of %s at %d: %w", c.account, en.Seq, err)
	}
	base := tlog.StoredHashIndex(0, n)
	next := make(map[int64]tlog.Hash, bits.OnesCount64(uint64(n+1)))
	for _, x := range edgeIndexes(n + 1) {
		if h, ok := c.edge[x]; ok {
			next[x] = h
		} else {
			next[x] = hs[x-base]
		}
	}
	c.edge, c.seq, c.prev = next, en.Seq, en.Hash
	hashes := make(bson.A, len(hs))
	for i, h := range hs {
		hashes[i] = bson.Binary{Data: h[:]}
	}
	rec := bson.D{
		{Key: "_id", Value: fmt.Sprintf("%s/%012d", c.account, base)},
		{Key: "accountId", Value: c.account}, {Key: "leaf", Value: n}, {Key: "hashes", Value: hashes},
	}
	return doc, rec, nil
}

// Root is the root of the account's tree.
func (c *Chain) Root() (tlog.Hash, error) { return tlog.TreeHash(c.seq, c) }

// Head is the account's hint document as the service stores it: the seq
// of its last entry and its tree's size, {_id: account, seq, size}.
func (c *Chain) Head() bson.D {
	return bson.D{{Key: "_id", Value: c.account}, {Key: "seq", Value: c.seq}, {Key: "size", Value: c.seq}}
}

// ReadHashes serves the right edge of the tree, all tlog needs to add a
// leaf or compute the root.
func (c *Chain) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := c.edge[x]
		if !ok {
			return nil, fmt.Errorf("hash %d is not on the right edge of a tree of size %d", x, c.seq)
		}
		out[i] = h
	}
	return out, nil
}

// edgeIndexes returns the stored hash indexes of the complete subtrees a
// tree of size leaves divides into, left to right.
func edgeIndexes(size int64) []int64 {
	var out []int64
	for l := 62; l >= 0; l-- {
		if size>>l&1 == 1 {
			out = append(out, tlog.StoredHashIndex(l, size>>l-1))
		}
	}
	return out
}

// Writer inserts seeded logs into the compliance database with unordered
// InsertMany commands of Batch documents.
type Writer struct {
	db               *mongo.Database
	entries, records []any
	chains           []*Chain
	// Batch is how many documents of a collection one command inserts.
	Batch int
}

// NewWriter returns a Writer into db.
func NewWriter(db *mongo.Database) *Writer { return &Writer{db: db, Batch: 1000} }

// Add adds the next entry of c (see Chain.Add), flushing when a batch is
// full. Every chain added to must be closed with Close for its hints.
func (w *Writer) Add(ctx context.Context, c *Chain, e events.Event, data []byte, recordedAt string) error {
	if c.seq == 0 {
		w.chains = append(w.chains, c)
	}
	entry, rec, err := c.Add(e, data, recordedAt)
	if err != nil {
		return err
	}
	w.entries, w.records = append(w.entries, entry), append(w.records, rec)
	if len(w.entries) >= w.Batch {
		return w.flush(ctx)
	}
	return nil
}

func (w *Writer) flush(ctx context.Context) error {
	opts := options.InsertMany().SetOrdered(false)
	if len(w.entries) > 0 {
		if _, err := w.db.Collection(EntriesCollection).InsertMany(ctx, w.entries, opts); err != nil {
			return fmt.Errorf("seed entries: %w", err)
		}
	}
	if len(w.records) > 0 {
		if _, err := w.db.Collection(HashesCollection).InsertMany(ctx, w.records, opts); err != nil {
			return fmt.Errorf("seed tree records: %w", err)
		}
	}
	w.entries, w.records = w.entries[:0], w.records[:0]
	return nil
}

// Close writes what is left, then the head and tree size hints of every
// chain added to: after the entries and records, as the service writes
// them.
func (w *Writer) Close(ctx context.Context) error {
	if err := w.flush(ctx); err != nil {
		return err
	}
	for len(w.chains) > 0 {
		n := min(w.Batch, len(w.chains))
		heads := make([]any, n)
		for i, c := range w.chains[:n] {
			heads[i] = c.Head()
		}
		opts := options.InsertMany().SetOrdered(false)
		if _, err := w.db.Collection(HeadsCollection).InsertMany(ctx, heads, opts); err != nil {
			return fmt.Errorf("seed head and tree size hints: %w", err)
		}
		w.chains = w.chains[n:]
	}
	return nil
}
