// Package ledger is the compliance log: an insert-only, per-account,
// hash-chained sequence of entries, one per event (see pkg/auditlog for the
// chain and pkg/seqlog for the storage), with each account's Merkle tree
// over them (see package tree) for roots and proofs. No code path here
// updates or deletes an entry.
package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/compliance/internal/tree"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
)

// Ledger reads and appends the compliance log.
type Ledger struct {
	log  *seqlog.Log
	tree *tree.Tree
	now  func() time.Time

	// verifying runs one verification per account and head at a time;
	// verified holds each account's last ok result (see Verify).
	verifying singleflight.Group
	mu        sync.Mutex
	verified  map[string]verification
}

// verification is an ok result and when its computation started.
type verification struct {
	at  time.Time
	res auditlog.Result
}

// Config is what a Ledger needs.
type Config struct {
	// DB holds the log's collections (auditlog.EntriesCollection,
	// auditlog.HeadsCollection, tree.HashesCollection, and
	// tree.SizesCollection, only read for size hints written there
	// before they moved into the heads' documents).
	DB *mongo.Database
	// Now is the clock of recordedAt and of reused verifications
	// (time.Now when nil).
	Now func() time.Time
}

// New returns the ledger stored in cfg.DB.
func New(cfg Config) *Ledger {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Each account's head hint and tree size hint are one document of
	// HeadsCollection ({_id: account, seq, size}), written in one
	// statement once an append has grown the tree (see hint).
	heads := cfg.DB.Collection(auditlog.HeadsCollection)
	l := &Ledger{
		log: seqlog.New(seqlog.Config{
			Docs:        cfg.DB.Collection(auditlog.EntriesCollection),
			Heads:       heads,
			LinkField:   auditlog.LinkField,
			CallerHints: true,
		}),
		now: cfg.Now, verified: map[string]verification{},
	}
	l.tree = tree.New(tree.Config{DB: cfg.DB, Sizes: heads, Leaves: l.leaves})
	return l
}

// EnsureIndexes creates the unique indexes (event id; account and seq).
func (l *Ledger) EnsureIndexes(ctx context.Context) error { return l.log.EnsureIndexes(ctx) }

// Forget drops cached heads and tree edges, when this process stops owning
// a partition.
func (l *Ledger) Forget() {
	l.log.Forget()
	l.tree.Forget()
}

// Event is an event to record, with its JSON data exactly as received.
type Event struct {
	events.Event
	Data []byte
	// Canonical is Data in RFC 8785 form (auditlog.Canonical), when the
	// caller has computed it already; nil, it is computed here.
	Canonical []byte
}

// Appended says where an event is recorded and whether it was already.
type Appended = seqlog.Result

// UnappendableError says that an event can never be an entry: its entry
// cannot be built (its data is not JSON that RFC 8785 can encode). Retrying
// cannot help; nothing of the batch from that event on was written.
type UnappendableError struct {
	EventID string
	Err     error
}

func (e *UnappendableError) Error() string {
	return fmt.Sprintf("event %s cannot be logged: %v", e.EventID, e.Err)
}

func (e *UnappendableError) Unwrap() error { return e.Err }

// Append records evs, all of account, in order, each at most once. An
// event whose entry cannot be built fails it with an *UnappendableError.
//
// The account's tree then grows over the new entries, from their leaf
// data kept from building them (no read), and over any entries before
// them it has not seen (read from the store). An error there leaves the
// entries durable and is returned, so that the batch is retried: its
// replays grow the tree. A tree that contradicts the entries
// (tree.ErrInconsistent) does not stop the log: Verify reports it, and
// TreeHead refuses to give a head.
func (l *Ledger) Append(ctx context.Context, account string, evs []Event) ([]Appended, error) {
	items, built := l.items(account, evs, nil)
	res, err := l.log.Append(ctx, account, items)
	if err != nil {
		return nil, err
	}
	accounts, all := []string{account}, [][]Appended{res}
	sizes, err := l.grow(ctx, accounts, all, []map[int64][]byte{built})
	if err != nil {
		return nil, err
	}
	if err := l.hint(ctx, accounts, all, sizes); err != nil {
		return nil, err
	}
	return res, nil
}

// Batch is the events of one account to append, in order.
type Batch struct {
	Account string
	Events  []Event
}

// AppendBatches appends the events of several accounts as Append does,
// and returns one result per event of each batch: the entries of every
// account go to the store together (seqlog.AppendBatches), then their
// tree records in one insert (tree.ExtendAll), then each account's head
// and tree size hints in one statement (hint), so that a partition fetch
// spread over many accounts costs a few store commands, not four per
// account. An event whose entry
// cannot be built fails it with an *UnappendableError before anything is
// written, unless an insert found a replay or another writer first (then
// the batches from that one on go through Append: what came before is
// written). The caller's duty is Append's: one batch per account, no
// concurrent append to any of them in this process.
func (l *Ledger) AppendBatches(ctx context.Context, batches []Batch) ([][]Appended, error) {
	sb := make([]seqlog.Batch, len(batches))
	built := make([]map[int64][]byte, len(batches))
	accounts := make([]string, len(batches))
	canon := canonicalData(batches)
	for i, b := range batches {
		var items []seqlog.Item
		items, built[i] = l.items(b.Account, b.Events, canon[i])
		sb[i] = seqlog.Batch{Account: b.Account, Items: items}
		accounts[i] = b.Account
	}
	res, err := l.log.AppendBatches(ctx, sb)
	if err != nil {
		return nil, err
	}
	sizes, err := l.grow(ctx, accounts, res, built)
	if err != nil {
		return nil, err
	}
	if err := l.hint(ctx, accounts, res, sizes); err != nil {
		return nil, err
	}
	return res, nil
}

// hint records, for each account, the furthest seq res reached and its
// tree's size in sizes, in one statement per account (a few commands in
// all: seqlog.HintHeads), once the entries and the tree records are
// durable. Each is a hint: the head hint a place to start reading from,
// lagging when a write of it failed; the size hint the size whose stored
// records a process that knows nothing of the tree reads and checks
// first (tree.Tree.load), so that a record deleted or edited below it is
// noticed. Neither is ever lowered.
func (l *Ledger) hint(ctx context.Context, accounts []string, res [][]Appended, sizes []int64) error {
	hs := make([]seqlog.HeadHint, 0, len(accounts))
	for i, account := range accounts {
		var head int64
		for _, r := range res[i] {
			head = max(head, r.Seq)
		}
		if head == 0 {
			continue
		}
		h := seqlog.HeadHint{Account: account, Seq: head}
		if sizes[i] > 0 {
			h.Also = bson.D{{Key: "size", Value: sizes[i]}}
		}
		hs = append(hs, h)
	}
	return l.log.HintHeads(ctx, hs)
}

// canonicalData returns the RFC 8785 form of each event's data, computed
// on every core at once: the costliest part of building an entry, and
// one that depends on neither its seq nor the chain. An event whose data
// has none is left nil, for its build to fail on.
func canonicalData(batches []Batch) [][][]byte {
	out := make([][][]byte, len(batches))
	type job struct{ b, i int }
	var jobs []job
	for b, batch := range batches {
		out[b] = make([][]byte, len(batch.Events))
		for i, e := range batch.Events {
			if e.Canonical != nil {
				out[b][i] = e.Canonical
				continue
			}
			jobs = append(jobs, job{b, i})
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for k := w; k < len(jobs); k += workers {
				j := jobs[k]
				if c, err := auditlog.Canonical(batches[j.b].Events[j.i].Data); err == nil {
					out[j.b][j.i] = c
				}
			}
		})
	}
	wg.Wait()
	return out
}

// items returns the seqlog items of evs, all of account (canon: their
// data in RFC 8785 form, nil to compute it in the builds), and the map
// their builds fill with the leaf data of the last entry built at each
// seq: the one stored there when the insert there succeeded.
func (l *Ledger) items(account string, evs []Event, canon [][]byte) ([]seqlog.Item, map[int64][]byte) {
	recordedAt := events.FormatTime(l.now())
	items := make([]seqlog.Item, 0, len(evs))
	built := make(map[int64][]byte, len(evs))
	for i, e := range evs {
		items = append(items, seqlog.Item{EventID: e.EventID, Build: func(seq int64, prev string) (any, string, error) {
			if prev == "" {
				prev = auditlog.GenesisHash
			}
			entry := auditlog.Entry{
				EventID: e.EventID, AccountID: account, Seq: seq, EventType: e.EventType,
				DocumentID: e.DocumentID, CampaignID: e.CampaignID,
				Actor: auditlog.Actor{Type: e.Actor.Type, ID: e.Actor.ID, SessionID: e.Actor.SessionID},
				Data:  json.RawMessage(e.Data), OccurredAt: e.OccurredAt, RecordedAt: recordedAt,
			}
			var c []byte
			if canon != nil {
				c = canon[i]
			}
			leaf, err := auditlog.SealLeaf(&entry, prev, c)
			if err != nil {
				return nil, "", &UnappendableError{EventID: e.EventID, Err: err}
			}
			doc, err := auditlog.ToDoc(entry, seqlog.Key(account, seq))
			if err != nil {
				return nil, "", &UnappendableError{EventID: e.EventID, Err: err}
			}
			built[seq] = leaf
			return doc, entry.Hash, nil
		}})
	}
	return items, built
}

// grow grows the trees of accounts over what res says was appended, from
// the leaf data built (no read), and over any entries before them the
// tree has not seen (read from the store). An error there leaves the
// entries durable and is returned, so that the batch is retried: its
// replays grow the tree. A tree that contradicts the entries
// (tree.ErrInconsistent) does not stop the log: Verify reports it, and
// TreeHead refuses to give a head.
//
// It returns each account's tree size (0 for one with nothing appended).
func (l *Ledger) grow(ctx context.Context, accounts []string, res [][]Appended, built []map[int64][]byte) ([]int64, error) {
	gs := make([]tree.Growth, 0, len(accounts))
	at := make([]int, 0, len(accounts)) // the account of each growth
	for i, account := range accounts {
		mine := make(map[int64][]byte, len(res[i]))
		var last int64
		for _, r := range res[i] {
			last = max(last, r.Seq)
			if !r.Replay {
				mine[r.Seq] = built[i][r.Seq]
			}
		}
		if last == 0 {
			continue
		}
		// Seq 1 written by this call: the account had no entry before
		// (the unique index of account and seq says so).
		fresh := len(res[i]) > 0 && res[i][0].Seq == 1 && !res[i][0].Replay
		gs = append(gs, tree.Growth{Account: account, To: last, New: fresh, Known: func(seq int64) ([]byte, bool) {
			d, ok := mine[seq]
			return d, ok
		}})
		at = append(at, i)
	}
	grown, err := l.tree.ExtendAll(ctx, gs)
	if err != nil && !errors.Is(err, tree.ErrInconsistent) {
		return nil, err
	}
	sizes := make([]int64, len(accounts))
	for k, size := range grown {
		sizes[at[k]] = size
	}
	return sizes, nil
}

// leaves reads the leaf data of the entries from seq from on, n of them,
// stopping before the first missing one.
func (l *Ledger) leaves(ctx context.Context, account string, from int64, n int) ([][]byte, error) {
	slots, err := l.Range(ctx, account, from, 1, n)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, n)
	for _, s := range slots {
		if !s.Found {
			break
		}
		d, err := auditlog.LeafData(s.Entry)
		if err != nil {
			return nil, fmt.Errorf("leaf of %s at %d: %w", account, s.Seq, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// ErrNotInTree says that a root or proof was asked of a tree larger than
// the account's.
var ErrNotInTree = tree.ErrMissing

// ErrTreeInconsistent says that the account's stored tree contradicts its
// entries or was rewritten under the running service; Verify says where.
var ErrTreeInconsistent = tree.ErrInconsistent

// TreeHead returns the size and root of account's tree (spec/transparency.md)
// after catching it up with the entries: a few store reads when it is
// current. An account with no entries has size 0 and tree.EmptyRoot.
func (l *Ledger) TreeHead(ctx context.Context, account string) (size int64, root tlog.Hash, err error) {
	head, err := l.Head(ctx, account)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	return l.tree.Head(ctx, account, head)
}

// TreeQuery asks TreeHeads for Account's tree head: of at least From
// leaves (the size of its last checkpoint, 0 when none) and, when it is
// larger, with the consistency proof from From.
type TreeQuery struct {
	Account string
	From    int64
}

// TreeHeadOf is TreeHeads' answer for one account: what TreeHead returns
// (Err wraps ErrTreeInconsistent for a tree it refuses), and the proof
// asked for, or ProofErr (ErrNotInTree when a hash it needs is not
// stored).
type TreeHeadOf = tree.HeadOf

// headsInFlight bounds the heads TreeHeads looks up in the store at once.
const headsInFlight = 8

// TreeHeads returns the tree heads of several accounts, as TreeHead does
// for each, with the consistency proofs asked for. An account whose head
// this process knows (it appended the entries, or found them) and that is
// not behind From is taken at that head, which is durable: its entries are
// not read. Another is looked up as TreeHead does: another writer may have
// appended, and a checkpoint of From leaves says the entries reached it.
// The trees' stored edges and proofs are then read together (tree.Heads):
// a round of many accounts costs a few commands.
func (l *Ledger) TreeHeads(ctx context.Context, qs []TreeQuery) []TreeHeadOf {
	tq := make([]tree.Query, len(qs))
	errs := make([]error, len(qs))
	var g errgroup.Group
	g.SetLimit(headsInFlight)
	for i, q := range qs {
		tq[i] = tree.Query{Account: q.Account, From: q.From}
		if h, ok := l.log.Known(q.Account); ok && h.Seq >= q.From {
			tq[i].To = h.Seq
			continue
		}
		g.Go(func() error {
			tq[i].To, errs[i] = l.Head(ctx, q.Account)
			return nil
		})
	}
	_ = g.Wait()
	var ask []tree.Query
	var at []int
	out := make([]TreeHeadOf, len(qs))
	for i := range qs {
		if errs[i] != nil {
			out[i].Err = errs[i]
			continue
		}
		ask, at = append(ask, tq[i]), append(at, i)
	}
	for j, h := range l.tree.Heads(ctx, ask) {
		out[at[j]] = h
	}
	return out
}

// RootAt returns the root of account's tree at size leaves, from at most
// log2(size)+1 lookups by _id; ErrNotInTree when the tree is smaller.
func (l *Ledger) RootAt(ctx context.Context, account string, size int64) (tlog.Hash, error) {
	return l.tree.Root(ctx, account, size)
}

// ProveRecord returns the inclusion proof of leaf index (entry seq
// index+1) in account's tree of size leaves, from O(log size) lookups;
// ErrNotInTree when the tree is smaller.
func (l *Ledger) ProveRecord(ctx context.Context, account string, size, index int64) (tlog.RecordProof, error) {
	return l.tree.ProveRecord(ctx, account, size, index)
}

// ProveTree returns the consistency proof from account's tree of from
// leaves to the one of to leaves (0 < from ≤ to), from O(log to) lookups;
// ErrNotInTree when the tree is smaller than to.
func (l *Ledger) ProveTree(ctx context.Context, account string, to, from int64) (tlog.TreeProof, error) {
	return l.tree.ProveTree(ctx, account, to, from)
}

// LeafData returns the leaf data of entry seq of account as it is stored
// (auditlog.LeafData); found is false when the entry is missing.
func (l *Ledger) LeafData(ctx context.Context, account string, seq int64) ([]byte, bool, error) {
	e, found, err := l.Get(ctx, account, seq)
	if err != nil || !found {
		return nil, found, err
	}
	d, err := auditlog.LeafData(e)
	if err != nil {
		return nil, false, fmt.Errorf("leaf of %s at %d: %w", account, seq, err)
	}
	return d, true, nil
}

// Consistent reports whether account's current tree extends the tree of
// oldSize leaves with root oldRoot: false when oldSize is beyond the
// current size (a rollback), when the proof does not hold, and when the
// stored tree was rewritten under the running service.
func (l *Ledger) Consistent(ctx context.Context, account string, oldSize int64, oldRoot tlog.Hash) (bool, error) {
	if oldSize < 0 {
		return false, fmt.Errorf("tree size %d", oldSize)
	}
	size, root, err := l.TreeHead(ctx, account)
	if errors.Is(err, tree.ErrInconsistent) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch {
	case oldSize > size:
		return false, nil
	case oldSize == 0:
		return oldRoot == tree.EmptyRoot, nil
	case oldSize == size:
		return oldRoot == root, nil
	}
	proof, err := l.tree.ProveTree(ctx, account, size, oldSize)
	if errors.Is(err, tree.ErrMissing) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return tlog.CheckTree(proof, size, root, oldSize, oldRoot) == nil, nil
}

// Head returns the seq of account's last entry: the furthest of the stored
// hint and what the entries themselves show, so that a deleted entry at
// any position still leaves the head where the log reached.
func (l *Ledger) Head(ctx context.Context, account string) (int64, error) {
	return l.log.Reach(ctx, account)
}

// Get returns entry seq of account; found is false when it is missing.
func (l *Ledger) Get(ctx context.Context, account string, seq int64) (auditlog.Entry, bool, error) {
	var d auditlog.Doc
	found, err := l.log.Get(ctx, account, seq, &d)
	if err != nil || !found {
		return auditlog.Entry{}, found, err
	}
	e, err := d.Entry()
	return e, true, err
}

// Slot is one position read by Range: the entry, or Found false for a
// missing one.
type Slot struct {
	Seq   int64
	Found bool
	Entry auditlog.Entry
}

// Range reads seqs from, from+step, … (step is 1 or -1), n of them, in
// finds by _id of a few hundred keys each (seqlog.Range), in order.
func (l *Ledger) Range(ctx context.Context, account string, from int64, step int64, n int) ([]Slot, error) {
	docs, err := seqlog.Range[auditlog.Doc](ctx, l.log, account, from, step, n)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	slots := make([]Slot, len(docs))
	for i, d := range docs {
		slots[i] = Slot{Seq: d.Seq, Found: d.Found}
		if d.Found {
			if slots[i].Entry, err = d.Doc.Entry(); err != nil {
				return nil, fmt.Errorf("read log of %s at %d: %w", account, d.Seq, err)
			}
		}
	}
	return slots, nil
}

// ErrInvalidCursor says that a page's cursor is not one Page returned.
var ErrInvalidCursor = errors.New("not a cursor of the compliance log")

// Query says which page of an account's log to read.
type Query struct {
	// Limit is the most entries the page holds.
	Limit int
	// Ascending pages oldest first; the default is newest first.
	Ascending bool
	// Cursor is the NextCursor of the previous page; "" for the first.
	Cursor string
	// Filters: only the entries with these values ("" matches any).
	DocumentID, CampaignID, EventType string
}

// Page is one page of an account's log.
type Page struct {
	Entries []auditlog.Entry
	// NextCursor is where the next page starts; "" when there is none.
	NextCursor string
}

// scanBudget bounds the entries a page walks looking for matches of its
// filters, so that a rare filter cannot make one request read a whole
// log; the page's NextCursor says where to go on.
const scanBudget = 1000

// Page returns the page of account's log that q asks for: up to q.Limit
// entries matching its filters, walking at most scanBudget positions. A
// cursor that Page did not return fails with ErrInvalidCursor. An entry
// missing from the store is left out (Verify reports it).
func (l *Ledger) Page(ctx context.Context, account string, q Query) (Page, error) {
	step := int64(-1)
	if q.Ascending {
		step = 1
	}
	// The cursor is the seq of the last position the previous page
	// walked.
	var after int64
	hasCursor := q.Cursor != ""
	if hasCursor {
		c, err := strconv.ParseInt(q.Cursor, 10, 64)
		if err != nil || c < 0 {
			return Page{}, ErrInvalidCursor
		}
		after = c
	}
	head, err := l.Head(ctx, account)
	if err != nil {
		return Page{}, err
	}
	from := head
	switch {
	case hasCursor:
		from = after + step
	case q.Ascending:
		from = 1
	}
	out := Page{Entries: []auditlog.Entry{}}
	walked, last := 0, int64(0)
	for walked < scanBudget && len(out.Entries) < q.Limit && from >= 1 && from <= head {
		n := min(int64(q.Limit-len(out.Entries)), int64(scanBudget-walked))
		if q.Ascending {
			n = min(n, head-from+1)
		} else {
			n = min(n, from)
		}
		slots, err := l.Range(ctx, account, from, step, int(n))
		if err != nil {
			return Page{}, err
		}
		for _, s := range slots {
			walked++
			last = s.Seq
			if s.Found && q.matches(s.Entry) {
				out.Entries = append(out.Entries, s.Entry)
			}
		}
		from = last + step
	}
	if last != 0 && from >= 1 && from <= head {
		out.NextCursor = strconv.FormatInt(last, 10)
	}
	return out, nil
}

func (q Query) matches(e auditlog.Entry) bool {
	return (q.DocumentID == "" || e.DocumentID == q.DocumentID) &&
		(q.CampaignID == "" || e.CampaignID == q.CampaignID) &&
		(q.EventType == "" || e.EventType == q.EventType)
}

// verifyReuse is how long an ok verification is reused while the log has
// not grown (spec/transparency.md): repeated calls cost a head lookup, and
// an entry edited or deleted in the database is reported at most this
// late.
const verifyReuse = time.Minute

// keepVerified bounds the accounts whose last result is kept before the
// expired ones are dropped.
const keepVerified = 10_000

// Verify returns the verification of account's chain (see recompute). An
// ok result is reused for up to verifyReuse while the head has not moved;
// a broken chain is recomputed every time, as what broke may change.
// Concurrent calls for one account and head share one computation, which
// runs to its end even when the caller that started it goes away, so that
// the others get its answer.
func (l *Ledger) Verify(ctx context.Context, account string) (auditlog.Result, error) {
	head, err := l.Head(ctx, account)
	if err != nil {
		return auditlog.Result{}, err
	}
	if res, ok := l.recent(account, head); ok {
		return res, nil
	}
	done := l.verifying.DoChan(account+"/"+strconv.FormatInt(head, 10), func() (any, error) {
		at := l.now()
		res, err := l.recompute(context.WithoutCancel(ctx), account, head)
		if err == nil && res.OK {
			l.keep(account, verification{at: at, res: res})
		}
		return res, err
	})
	select {
	case <-ctx.Done():
		return auditlog.Result{}, ctx.Err()
	case r := <-done:
		if r.Err != nil {
			return auditlog.Result{}, r.Err
		}
		return r.Val.(auditlog.Result), nil
	}
}

// recent returns account's last ok result if it was computed less than
// verifyReuse ago at head.
func (l *Ledger) recent(account string, head int64) (auditlog.Result, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.verified[account]
	if !ok || v.res.HeadSeq != head || l.now().Sub(v.at) >= verifyReuse {
		return auditlog.Result{}, false
	}
	return v.res, true
}

func (l *Ledger) keep(account string, v verification) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.verified) >= keepVerified {
		for a, old := range l.verified {
			if l.now().Sub(old.at) >= verifyReuse {
				delete(l.verified, a)
			}
		}
	}
	l.verified[account] = v
}

// verifyWindow is how many entries (and tree records) recompute reads at
// once; the next window is read while one is checked.
const verifyWindow = 1024

// window is one window of entries and their stored tree records (nil
// when the tree is not read), or the error reading them.
type window struct {
	slots   []Slot
	records [][]tlog.Hash
	err     error
}

// readWindow reads n entries of account from seq from on, and with them
// (at once) the stored tree records of their leaves.
func (l *Ledger) readWindow(ctx context.Context, account string, from int64, n int) window {
	var w window
	var treeErr error
	var wg sync.WaitGroup
	wg.Go(func() { w.records, treeErr = l.tree.Records(ctx, account, from-1, n) })
	w.slots, w.err = l.Range(ctx, account, from, 1, n)
	wg.Wait()
	if w.err == nil {
		w.err = treeErr
	}
	return w
}

// recompute recomputes account's chain from its first entry to head, and
// its tree: every leaf hash and every stored hash of the tree, rebuilt in
// memory from the entries, must equal the stored ones. Entries and tree
// records are read verifyWindow at a time in finds by _id of a few
// hundred keys (seqlog.Range, tree.Records), the next window while one is
// checked; each entry is encoded once for both its hash and its leaf
// (auditlog.Check). The result's Entries counts the entries found, which
// falls short of HeadSeq when some were deleted; HeadSeq and HeadHash say
// where the log reached, broken or not; TreeSize and RootHash are the
// stored tree's, up to head. FirstBrokenSeq is the lowest seq at which
// either the chain or the tree does not hold.
func (l *Ledger) recompute(ctx context.Context, account string, head int64) (auditlog.Result, error) {
	// Catch the tree up first, so that what it lacks is what it cannot
	// have; a tree that contradicts the entries is reported below.
	size, err := l.tree.Extend(ctx, account, head, nil)
	if err != nil && !errors.Is(err, tree.ErrInconsistent) {
		return auditlog.Result{}, err
	}
	size = min(size, head)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	windows := make(chan window, 1)
	go func() {
		defer close(windows)
		for from := int64(1); from <= head; from += verifyWindow {
			w := l.readWindow(ctx, account, from, int(min(verifyWindow, head-from+1)))
			select {
			case windows <- w:
			case <-ctx.Done():
				return
			}
			if w.err != nil {
				return
			}
		}
	}()

	v := auditlog.NewVerifier(account)
	built := tree.NewBuilder()
	var treeBroken int64 // the first seq the stored tree does not hold; 0 when none
	var treeReason string
	var stored int64
	var headHash string
	for w := range windows {
		if w.err != nil {
			return auditlog.Result{}, w.err
		}
		for i, s := range w.slots {
			if !s.Found {
				// Skipping it lets the verifier report the missing seq;
				// the tree cannot go past it.
				if treeBroken == 0 {
					treeBroken = s.Seq
				}
				continue
			}
			stored++
			hash, leaf, cerr := auditlog.Check(s.Entry)
			_ = v.AddHashed(s.Entry, hash, cerr)
			if s.Seq == head {
				headHash = s.Entry.Hash
			}
			if treeBroken == 0 {
				if reason := checkLeaf(built, s.Entry.Seq, leaf, cerr, w.records[i]); reason != "" {
					treeBroken, treeReason = s.Seq, reason
				}
			}
		}
	}
	out := v.Finish(head)
	out.Entries, out.HeadSeq, out.HeadHash = stored, head, headHash
	out.TreeSize = size
	root, err := l.tree.Root(ctx, account, size)
	switch {
	case err == nil:
		out.RootHash = base64.StdEncoding.EncodeToString(root[:])
		if treeBroken == 0 && built.Size() == size {
			if want, err := built.Root(); err != nil || want != root {
				treeBroken, treeReason = size, fmt.Sprintf("the stored tree's root at size %d is not the root of the entries", size)
			}
		}
	case errors.Is(err, tree.ErrMissing):
		// Reported below: a stored hash of the tree is missing.
	default:
		return auditlog.Result{}, err
	}
	if treeReason != "" && (out.OK || treeBroken < *out.FirstBrokenSeq) {
		out.OK, out.FirstBrokenSeq, out.Reason = false, &treeBroken, treeReason
	}
	return out, nil
}

// checkLeaf adds the leaf of entry seq, data (or leafErr when it has
// none), to built and compares the record it makes with the one stored
// (nil when none); it returns what is wrong, or "".
func checkLeaf(built *tree.Builder, seq int64, data []byte, leafErr error, stored []tlog.Hash) string {
	if leafErr != nil {
		return leafErr.Error()
	}
	want, err := built.Add(data)
	if err != nil {
		return err.Error()
	}
	switch {
	case stored == nil:
		return fmt.Sprintf("entry %d is not in the stored tree", seq)
	case len(stored) != len(want) || stored[0] != want[0]:
		return fmt.Sprintf("the stored tree's leaf hash of entry %d is not the hash of the entry", seq)
	}
	for i := range want {
		if stored[i] != want[i] {
			return fmt.Sprintf("the stored tree's hashes over entries up to %d are not the hashes of the entries", seq)
		}
	}
	return ""
}
