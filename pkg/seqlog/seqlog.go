// Package seqlog keeps insert-only, per-account sequences of documents in
// MongoDB: each account's documents are numbered 1, 2, 3… with no gap, and
// each carries the id of the event it records, at most once. The compliance
// log and the activity feed are both such sequences.
//
// A document's _id is Key(account, seq), so every read and every check is a
// lookup by _id: the one query every MongoDB-compatible store, the embedded
// one included, answers from an index. A unique index on (accountId,
// eventId) makes a replayed event a no-op. Writers append in batches with one ordered
// insert; when it fails (a replay, or another writer that appended first)
// they work out what happened from lookups by _id alone and carry on, so
// no event is lost, none is recorded twice, and no sequence forks.
package seqlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/rcm-platform/rcm/pkg/mongox"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Key is the _id of an account's document number seq.
func Key(account string, seq int64) string { return fmt.Sprintf("%s/%012d", account, seq) }

// Fields every stored document has besides its own.
const (
	FieldAccount = "accountId"
	FieldSeq     = "seq"
	FieldEventID = "eventId"
)

// Head is the last document of an account's sequence: its seq (0 when the
// sequence is empty) and its link, a value the next document is built
// from (the compliance log's hash; unused by the feed).
type Head struct {
	Seq  int64  `bson:"seq"`
	Link string `bson:"link"`
}

// Item is an event to append. Build returns the document to store as
// number seq after a document whose link is prev, and the new document's
// own link. The document must carry _id = Key(account, seq), accountId,
// seq and eventId.
type Item struct {
	EventID string
	Build   func(seq int64, prev string) (doc any, link string, err error)
}

// Result says what became of one item.
type Result struct {
	EventID string
	// Seq is where the event is recorded: where this call appended it, or,
	// for a replay, where it was found; 0 for a replay too old to find
	// cheaply.
	Seq int64
	// Replay is true when the event was already recorded.
	Replay bool
}

// Log is one insert-only sequence collection and its head hints.
type Log struct {
	docs  *mongo.Collection
	heads *mongo.Collection

	mu    sync.Mutex
	cache map[string]Head
}

// New returns the log stored in docs, with head hints in heads.
func New(docs, heads *mongo.Collection) *Log {
	return &Log{docs: docs, heads: heads, cache: map[string]Head{}}
}

// EnsureIndexes creates the unique indexes the log's rules rest on.
func (l *Log) EnsureIndexes(ctx context.Context) error {
	return mongox.Classify(mongox.EnsureIndexes(ctx, l.docs,
		// Unique per account rather than globally: an event belongs to one
		// account, and a shard key of accountId allows only unique
		// indexes that start with it.
		mongox.Index{Keys: bson.D{{Key: FieldAccount, Value: 1}, {Key: FieldEventID, Value: 1}}, Options: options.Index().SetUnique(true)},
		mongox.Index{Keys: bson.D{{Key: FieldAccount, Value: 1}, {Key: FieldSeq, Value: 1}}, Options: options.Index().SetUnique(true)},
	))
}

// Forget drops the cached heads, as when this process stops owning the
// accounts' partition: the next append looks the head up again.
func (l *Log) Forget() {
	l.mu.Lock()
	clear(l.cache)
	l.mu.Unlock()
}

// Get decodes document seq of account into v; found is false when there
// is none.
func (l *Log) Get(ctx context.Context, account string, seq int64, v any) (found bool, err error) {
	err = l.docs.FindOne(ctx, bson.D{{Key: "_id", Value: Key(account, seq)}}).Decode(v)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get %s: %w", Key(account, seq), mongox.Classify(err))
	}
	return true, nil
}

type linkDoc struct {
	EventID string `bson:"eventId"`
	Link    string `bson:"link"`
}

// probe reads the event id and link of document seq, if any. linkField
// names the field holding the link.
func (l *Log) probe(ctx context.Context, account string, seq int64, linkField string) (linkDoc, bool, error) {
	var raw bson.Raw
	found, err := l.Get(ctx, account, seq, &raw)
	if err != nil || !found {
		return linkDoc{}, found, err
	}
	var d linkDoc
	if v, err := raw.LookupErr(FieldEventID); err == nil {
		d.EventID, _ = v.StringValueOK()
	}
	if linkField != "" {
		if v, err := raw.LookupErr(linkField); err == nil {
			d.Link, _ = v.StringValueOK()
		}
	}
	return d, true, nil
}

// HeadHint returns the stored hint of account's head; zero when none.
func (l *Log) HeadHint(ctx context.Context, account string) (Head, error) {
	var h Head
	err := l.heads.FindOne(ctx, bson.D{{Key: "_id", Value: account}}).Decode(&h)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Head{}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("head hint of %s: %w", account, mongox.Classify(err))
	}
	return h, nil
}

// LoadHead finds account's head from the store: from the hint, or when
// there is none by galloping over seqs, then forward one by one to the
// last document. linkField names the field holding the link.
func (l *Log) LoadHead(ctx context.Context, account, linkField string) (Head, error) {
	hint, err := l.HeadHint(ctx, account)
	if err != nil {
		return Head{}, err
	}
	return l.loadHead(ctx, account, linkField, hint)
}

// Reach returns the furthest seq account's sequence is known to have
// reached: its head, or the hint when that is further (documents deleted
// from the store, which a verifier must then report missing). It reads
// the hint once.
func (l *Log) Reach(ctx context.Context, account, linkField string) (int64, error) {
	hint, err := l.HeadHint(ctx, account)
	if err != nil {
		return 0, err
	}
	h, err := l.loadHead(ctx, account, linkField, hint)
	if err != nil {
		return 0, err
	}
	return max(hint.Seq, h.Seq), nil
}

// loadHead finds account's head starting from the hint h.
func (l *Log) loadHead(ctx context.Context, account, linkField string, h Head) (Head, error) {
	if h.Seq > 0 {
		d, found, err := l.probe(ctx, account, h.Seq, linkField)
		if err != nil {
			return Head{}, err
		}
		if found {
			h.Link = d.Link
		} else {
			h = Head{} // a hint past the end: find the head without it
		}
	}
	if h.Seq == 0 {
		// Exponential probes, then binary search, to a seq that exists
		// with the next one missing.
		lo, hi := int64(0), int64(1)
		for {
			_, found, err := l.probe(ctx, account, hi, "")
			if err != nil {
				return Head{}, err
			}
			if !found {
				break
			}
			lo, hi = hi, hi*2
		}
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			_, found, err := l.probe(ctx, account, mid, "")
			if err != nil {
				return Head{}, err
			}
			if found {
				lo = mid
			} else {
				hi = mid
			}
		}
		// lo exists (or is 0) and lo+1 does not: lo is the head.
		h = Head{Seq: lo}
		if lo > 0 {
			d, _, err := l.probe(ctx, account, lo, linkField)
			if err != nil {
				return Head{}, err
			}
			h.Link = d.Link
		}
		return h, nil
	}
	return l.forward(ctx, account, h, linkField, nil)
}

// forward follows the sequence from h to its last document. seen, when
// not nil, receives the event id of every document passed.
func (l *Log) forward(ctx context.Context, account string, h Head, linkField string, seen map[string]int64) (Head, error) {
	for {
		d, found, err := l.probe(ctx, account, h.Seq+1, linkField)
		if err != nil {
			return Head{}, err
		}
		if !found {
			return h, nil
		}
		h = Head{Seq: h.Seq + 1, Link: d.Link}
		if seen != nil {
			seen[d.EventID] = h.Seq
		}
	}
}

func (l *Log) cached(account string) (Head, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.cache[account]
	return h, ok
}

func (l *Log) remember(account string, h Head) {
	l.mu.Lock()
	l.cache[account] = h
	l.mu.Unlock()
}

// replayWindow bounds how far back a replayed event is looked for, to tell
// where it is recorded.
const replayWindow = 256

// Append appends items to account's sequence in order, each event once.
// linkField names the stored field holding a document's link. It returns
// one result per item. It must not run concurrently for one account in one
// process (callers own an account's partition); another process appending
// to the same account at the same time is detected and survived.
func (l *Log) Append(ctx context.Context, account, linkField string, items []Item) ([]Result, error) {
	head, ok := l.cached(account)
	if !ok {
		var err error
		if head, err = l.LoadHead(ctx, account, linkField); err != nil {
			return nil, err
		}
	}
	results := make([]Result, 0, len(items))

	// Fast path: one ordered insert of the whole batch.
	docs := make([]any, 0, len(items))
	links := make([]string, 0, len(items))
	next := head
	for _, it := range items {
		doc, link, err := it.Build(next.Seq+1, next.Link)
		if err != nil {
			return nil, err
		}
		docs = append(docs, doc)
		links = append(links, link)
		next = Head{Seq: next.Seq + 1, Link: link}
	}
	_, err := l.docs.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true))
	if err == nil {
		for i, it := range items {
			results = append(results, Result{EventID: it.EventID, Seq: head.Seq + int64(i) + 1})
		}
		l.remember(account, next)
		l.hint(ctx, account, next)
		return results, nil
	}
	if !mongox.IsDuplicateKey(err) {
		// Nothing is known of what was written: look the head up afresh
		// next time.
		l.mu.Lock()
		delete(l.cache, account)
		l.mu.Unlock()
		return nil, fmt.Errorf("append to %s: %w", account, mongox.Classify(err))
	}

	// Slow path: a replay, or another writer. The ordered insert stopped
	// at its first failure: what came before it is this call's. Learn the
	// rest from lookups, then append it one by one.
	seen := map[string]int64{}
	if n := insertedBefore(err); n > 0 && n < len(items) {
		for i, it := range items[:n] {
			results = append(results, Result{EventID: it.EventID, Seq: head.Seq + int64(i) + 1})
		}
		head = Head{Seq: head.Seq + int64(n), Link: links[n-1]}
		items = items[n:]
	}
	for _, it := range items {
		res, h, err := l.appendOne(ctx, account, linkField, head, it, seen)
		if err != nil {
			l.mu.Lock()
			delete(l.cache, account)
			l.mu.Unlock()
			return nil, err
		}
		head = h
		results = append(results, res)
	}
	l.remember(account, head)
	l.hint(ctx, account, head)
	return results, nil
}

func (l *Log) appendOne(ctx context.Context, account, linkField string, head Head, it Item, seen map[string]int64) (Result, Head, error) {
	for {
		var err error
		if head, err = l.forward(ctx, account, head, linkField, seen); err != nil {
			return Result{}, head, err
		}
		if seq, ok := seen[it.EventID]; ok {
			return Result{EventID: it.EventID, Seq: seq, Replay: true}, head, nil
		}
		doc, link, err := it.Build(head.Seq+1, head.Link)
		if err != nil {
			return Result{}, head, err
		}
		_, err = l.docs.InsertOne(ctx, doc)
		if err == nil {
			head = Head{Seq: head.Seq + 1, Link: link}
			seen[it.EventID] = head.Seq
			return Result{EventID: it.EventID, Seq: head.Seq}, head, nil
		}
		if !mongox.IsDuplicateKey(err) {
			return Result{}, head, fmt.Errorf("append %s to %s: %w", it.EventID, account, mongox.Classify(err))
		}
		// Either the seq was taken meanwhile (forward finds it) or the
		// event is recorded already, further back.
		_, taken, err := l.probe(ctx, account, head.Seq+1, "")
		if err != nil {
			return Result{}, head, err
		}
		if taken {
			continue
		}
		seq, err := l.findBack(ctx, account, head.Seq, it.EventID)
		if err != nil {
			return Result{}, head, err
		}
		return Result{EventID: it.EventID, Seq: seq, Replay: true}, head, nil
	}
}

// insertedBefore returns how many documents an ordered insert wrote before
// it failed: the index of its first write error, or 0 when unknown.
func insertedBefore(err error) int {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 {
		return 0
	}
	first := bwe.WriteErrors[0].Index
	for _, we := range bwe.WriteErrors {
		first = min(first, we.Index)
	}
	return first
}

// findBack looks for eventID among the last replayWindow documents before
// and at seq; 0 when not found there.
func (l *Log) findBack(ctx context.Context, account string, seq int64, eventID string) (int64, error) {
	for s := seq; s > 0 && s > seq-replayWindow; s-- {
		d, found, err := l.probe(ctx, account, s, "")
		if err != nil {
			return 0, err
		}
		if found && d.EventID == eventID {
			return s, nil
		}
	}
	return 0, nil
}

// hint records h as account's head unless a later one is recorded. The
// hint only saves lookups, and a stale or missing one is corrected by
// LoadHead, so failing to write it fails nothing.
func (l *Log) hint(ctx context.Context, account string, h Head) {
	_, _ = l.heads.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: account}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "seq", Value: h.Seq}}}},
		options.UpdateOne().SetUpsert(true))
}

// AccountOf returns the account of a key made by Key.
func AccountOf(key string) string {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return ""
	}
	return key[:i]
}
