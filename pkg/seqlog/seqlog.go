// Package seqlog keeps insert-only, per-account sequences of documents in
// MongoDB: each account's documents are numbered 1, 2, 3… with no gap, and
// each carries the id of the event it records, at most once. The compliance
// log and the activity feed are both such sequences.
//
// A document's _id is Key(account, seq), so every read and every check is a
// lookup by _id: the one query every MongoDB-compatible store, the embedded
// one included, answers from an index. A unique index on (accountId,
// eventId) makes a replayed event a no-op. Writers append in batches with
// ordered inserts; when one fails (a replay, or another writer that
// appended first) they work out what happened from lookups by _id alone,
// about one per document, and carry on, so no event is lost, none is
// recorded twice, and no sequence forks.
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
	"golang.org/x/sync/errgroup"
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
	docs      *mongo.Collection
	heads     *mongo.Collection
	linkField string
	hintEvery int64
	// callerHints: see Config.CallerHints.
	callerHints bool

	mu    sync.Mutex
	cache map[string]Head
}

// Config says where a Log is stored.
type Config struct {
	// Docs holds the documents, Heads the hints of each account's head.
	Docs, Heads *mongo.Collection
	// LinkField names the stored field holding a document's link; ""
	// when the documents carry none.
	LinkField string
	// HintEvery is how far apart AppendBatches writes an account's hint:
	// when its head reaches a multiple of HintEvery (every batch when 0
	// or 1). A reader that needs the exact head reads forward from the
	// hint (FindHead).
	HintEvery int64
	// CallerHints says that the caller writes the hints (HintHeads), with
	// fields of its own in the same statements, once its writes that go
	// with an append are done: Append and AppendBatches write none.
	CallerHints bool
}

// New returns the log stored as cfg says.
func New(cfg Config) *Log {
	return &Log{docs: cfg.Docs, heads: cfg.Heads, linkField: cfg.LinkField, hintEvery: max(cfg.HintEvery, 1),
		callerHints: cfg.CallerHints, cache: map[string]Head{}}
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

// probe reads the event id and link of document seq, if any.
func (l *Log) probe(ctx context.Context, account string, seq int64) (linkDoc, bool, error) {
	var raw bson.Raw
	found, err := l.Get(ctx, account, seq, &raw)
	if err != nil || !found {
		return linkDoc{}, found, err
	}
	var d linkDoc
	if v, err := raw.LookupErr(FieldEventID); err == nil {
		d.EventID, _ = v.StringValueOK()
	}
	if l.linkField != "" {
		if v, err := raw.LookupErr(l.linkField); err == nil {
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
// last document.
func (l *Log) LoadHead(ctx context.Context, account string) (Head, error) {
	hint, err := l.HeadHint(ctx, account)
	if err != nil {
		return Head{}, err
	}
	return l.loadHead(ctx, account, hint)
}

// Reach returns the furthest seq account's sequence is known to have
// reached: its head, or the hint when that is further (documents deleted
// from the store, which a verifier must then report missing). It reads
// the hint once.
func (l *Log) Reach(ctx context.Context, account string) (int64, error) {
	hint, err := l.HeadHint(ctx, account)
	if err != nil {
		return 0, err
	}
	h, err := l.loadHead(ctx, account, hint)
	if err != nil {
		return 0, err
	}
	return max(hint.Seq, h.Seq), nil
}

// loadHead finds account's head starting from the hint h.
func (l *Log) loadHead(ctx context.Context, account string, h Head) (Head, error) {
	if h.Seq > 0 {
		d, found, err := l.probe(ctx, account, h.Seq)
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
			_, found, err := l.probe(ctx, account, hi)
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
			_, found, err := l.probe(ctx, account, mid)
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
			d, _, err := l.probe(ctx, account, lo)
			if err != nil {
				return Head{}, err
			}
			h.Link = d.Link
		}
		return h, nil
	}
	return l.forward(ctx, account, h)
}

// forward follows the sequence from h to its last document.
func (l *Log) forward(ctx context.Context, account string, h Head) (Head, error) {
	for {
		d, found, err := l.probe(ctx, account, h.Seq+1)
		if err != nil {
			return Head{}, err
		}
		if !found {
			return h, nil
		}
		h = Head{Seq: h.Seq + 1, Link: d.Link}
	}
}

// Known returns account's head as this process last appended or found
// it, if it holds one: durable, and the last document unless another
// writer appended since.
func (l *Log) Known(account string) (Head, bool) { return l.cached(account) }

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

// replayWindow bounds how far back, beyond the length of its batch, an
// append looks for a replayed event to tell where it is recorded.
const replayWindow = 256

// readAhead is how many lookups by _id a read of the tail keeps in flight,
// and readChunk how many seqs it reads before checking whether it has
// found what it looks for.
const (
	readAhead = 8
	readChunk = 64
)

// insertChunk bounds the documents of one ordered insert. An ordered
// insert must stop at its first failure, or a later document lands past a
// free seq and the sequence has a gap. MongoDB stops; FerretDB (the
// embedded store of the local stack and the tests) applies an insert in
// batches of 100 and, after a failure in one, goes on with the next. No
// more than 100 at once keeps the rule on both, for one round trip per
// 100 documents.
const insertChunk = 100

// Append appends items to account's sequence in order, each event once.
// It returns one result per item. It must not run concurrently for one account in one
// process (callers own an account's partition); another process appending
// to the same account at the same time is detected and survived.
//
// The items go to the store in ordered inserts (see insertChunk). When one
// fails on a unique index, what came before the failure is this call's; the failing
// item is either at a seq another writer took meanwhile (its document is
// there: the tail is read forward from the head) or an event recorded
// before (the tail is read back from the head, in parallel, until that
// event is found). Every event the tail shows is a replay where it is
// recorded, and what is left is inserted again, in order. So a batch
// delivered again after a crash costs one lookup per event, once, plus a
// few commands, instead of a search per event.
func (l *Log) Append(ctx context.Context, account string, items []Item) ([]Result, error) {
	head, ok := l.cached(account)
	if !ok {
		var err error
		if head, err = l.LoadHead(ctx, account); err != nil {
			return nil, err
		}
	}
	t := &tail{log: l, account: account, head: head, low: head.Seq + 1,
		seen: map[string]int64{}, budget: int64(len(items)) + replayWindow}
	results, err := t.append(ctx, items)
	if err != nil {
		// Nothing sure is known of what was written: look the head up
		// afresh next time.
		l.mu.Lock()
		delete(l.cache, account)
		l.mu.Unlock()
		return nil, err
	}
	l.remember(account, t.head)
	if !l.callerHints {
		// The hint only saves lookups, and a stale or missing one is
		// corrected by LoadHead, so failing to write it fails nothing.
		_ = l.HintHeads(ctx, []HeadHint{{Account: account, Seq: t.head.Seq}})
	}
	return results, nil
}

// tail is what one Append knows of the end of an account's sequence: its
// head, and the event id of every document from low to the head.
type tail struct {
	log     *Log
	account string

	head Head
	low  int64
	seen map[string]int64
	// budget is how many more documents below the head the tail may
	// still read back.
	budget int64
	// unsure is set after a replay too old to find (see insert).
	unsure bool
}

func (t *tail) append(ctx context.Context, items []Item) ([]Result, error) {
	results := make([]Result, len(items))
	pending := make([]int, len(items)) // indexes of the items not placed yet
	for i := range pending {
		pending[i] = i
	}
	for {
		// Whatever the tail shows is recorded already.
		rest := pending[:0]
		for _, i := range pending {
			if seq, ok := t.seen[items[i].EventID]; ok {
				results[i] = Result{EventID: items[i].EventID, Seq: seq, Replay: true}
			} else {
				rest = append(rest, i)
			}
		}
		pending = rest
		if len(pending) == 0 {
			return results, nil
		}
		n, err := t.insert(ctx, items, pending)
		for _, i := range pending[:n] {
			results[i] = Result{EventID: items[i].EventID, Seq: t.seen[items[i].EventID]}
		}
		if err == nil {
			return results, nil
		}
		if !mongox.IsDuplicateKey(err) {
			return nil, fmt.Errorf("append to %s: %w", t.account, mongox.Classify(err))
		}
		pending = pending[n:]
		_, taken, err := t.log.probe(ctx, t.account, t.head.Seq+1)
		if err != nil {
			return nil, err
		}
		if taken {
			// Another writer appended: read what it wrote.
			if err := t.forward(ctx); err != nil {
				return nil, err
			}
			continue
		}
		// The seq was free, so the first pending event is recorded already,
		// at or below the head.
		first := items[pending[0]].EventID
		found, err := t.readBack(ctx, first)
		if err != nil {
			return nil, err
		}
		if !found {
			// Too far back to find cheaply; the unique index vouches
			// that it is there.
			results[pending[0]] = Result{EventID: first, Replay: true}
			pending = pending[1:]
			t.unsure = true
		}
	}
}

// insert appends the pending items after the head in ordered inserts of
// at most insertChunk documents each, built as they go, and returns how
// many it wrote, which are then part of the tail. After a replay too old
// to find, the next items are likely old too: it tries one document alone
// first, so that each such replay costs a small insert, not the whole rest
// of the batch again.
func (t *tail) insert(ctx context.Context, items []Item, pending []int) (int, error) {
	n := 0
	for n < len(pending) {
		size := insertChunk
		if t.unsure {
			size = 1
		}
		chunk := pending[n:min(n+size, len(pending))]
		docs := make([]any, 0, len(chunk))
		heads := make([]Head, 0, len(chunk))
		next := t.head
		for _, i := range chunk {
			doc, link, err := items[i].Build(next.Seq+1, next.Link)
			if err != nil {
				return n, err
			}
			next = Head{Seq: next.Seq + 1, Link: link}
			docs = append(docs, doc)
			heads = append(heads, next)
		}
		_, err := t.log.docs.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true))
		written := len(chunk)
		if err != nil {
			written = insertedBefore(err)
		}
		for j, i := range chunk[:written] {
			t.seen[items[i].EventID] = heads[j].Seq
		}
		if written > 0 {
			t.head = heads[written-1]
		}
		n += written
		if err != nil {
			return n, err
		}
		t.unsure = false
	}
	return n, nil
}

// forward reads the documents after the head to the last, in runs of
// parallel lookups that double in length: what another writer appended
// costs one lookup per document and a few round trips.
func (t *tail) forward(ctx context.Context) error {
	for width := int64(1); ; width = min(2*width, readChunk) {
		docs, err := t.read(ctx, t.head.Seq+1, width, 1)
		if err != nil {
			return err
		}
		for _, d := range docs {
			if d == nil {
				return nil
			}
			t.head = Head{Seq: t.head.Seq + 1, Link: d.Link}
			t.seen[d.EventID] = t.head.Seq
		}
	}
}

// readBack reads the documents below low, a chunk at a time with lookups
// in parallel, until it finds eventID, reaches the first document or
// spends its budget. It reports whether eventID is in the tail.
func (t *tail) readBack(ctx context.Context, eventID string) (bool, error) {
	for {
		if _, ok := t.seen[eventID]; ok {
			return true, nil
		}
		n := min(int64(readChunk), t.low-1, t.budget)
		if n <= 0 {
			return false, nil
		}
		docs, err := t.read(ctx, t.low-1, n, -1)
		if err != nil {
			return false, err
		}
		for i, d := range docs {
			if d != nil {
				t.seen[d.EventID] = t.low - 1 - int64(i)
			}
		}
		t.low -= n
		t.budget -= n
	}
}

// read looks up n documents from seq from on by step (1 or -1), readAhead
// at a time; a missing document is nil.
func (t *tail) read(ctx context.Context, from, n, step int64) ([]*linkDoc, error) {
	docs := make([]*linkDoc, n)
	err := lookups(ctx, len(docs), func(ctx context.Context, i int) error {
		d, found, err := t.log.probe(ctx, t.account, from+int64(i)*step)
		if found {
			docs[i] = &d
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return docs, nil
}

// lookups runs lookup(i) for i from 0 to n-1, readAhead at a time.
func lookups(ctx context.Context, n int, lookup func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(readAhead)
	for i := range n {
		g.Go(func() error { return lookup(gctx, i) })
	}
	return g.Wait()
}

// Slot is one position read by Range: the document decoded into Doc, or
// Found false when there is none.
type Slot[T any] struct {
	Seq   int64
	Found bool
	Doc   T
}

// rangeBatch is how many documents one find of Range asks for by _id, and
// rangeInFlight how many such finds it keeps in flight. MongoDB answers a
// find of {_id: {$in: keys}} from its _id index; the embedded store's
// front answers it with lookups by _id of its own (up to 1,000 keys), so a
// few hundred keys a find cost one round trip where they cost one each.
const (
	rangeBatch    = 256
	rangeInFlight = 4
)

// Range reads n documents of account's sequence, at seqs from, from+step,
// … (step is 1 or -1), in finds by _id of up to rangeBatch keys each, a
// few in flight at once, and returns them in that order.
func Range[T any](ctx context.Context, l *Log, account string, from, step int64, n int) ([]Slot[T], error) {
	slots := make([]Slot[T], n)
	for i := range slots {
		slots[i].Seq = from + int64(i)*step
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(rangeInFlight)
	for lo := 0; lo < n; lo += rangeBatch {
		part := slots[lo:min(lo+rangeBatch, n)]
		g.Go(func() error { return findSlots(gctx, l, account, part) })
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("read %d of %s from %d: %w", n, account, from, err)
	}
	return slots, nil
}

// findSlots fills slots (at most a few hundred) from one find of their
// keys by _id; a slot whose document is not stored stays not Found.
func findSlots[T any](ctx context.Context, l *Log, account string, slots []Slot[T]) error {
	keys := make([]string, len(slots))
	at := make(map[string]int, len(slots))
	for i, s := range slots {
		keys[i] = Key(account, s.Seq)
		at[keys[i]] = i
	}
	cur, err := l.docs.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: keys}}}},
		options.Find().SetBatchSize(int32(len(keys))))
	if err != nil {
		return mongox.Classify(err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").StringValueOK()
		i, ok := at[id]
		if !ok {
			continue // not asked for: a store that answers more than asked
		}
		if err := cur.Decode(&slots[i].Doc); err != nil {
			return fmt.Errorf("decode %s: %w", id, err)
		}
		slots[i].Found = true
	}
	return mongox.Classify(cur.Err())
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

// AccountOf returns the account of a key made by Key.
func AccountOf(key string) string {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return ""
	}
	return key[:i]
}
