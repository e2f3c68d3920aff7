// Package tree keeps each account's RFC 6962 Merkle tree over its
// compliance log entries (spec/transparency.md): leaf n is the leaf data
// of entry seq n+1, and the store holds the hashes golang.org/x/mod's
// tlog.StoredHashes defines, each written once, so that a root or a proof
// reads O(log n) records by _id, in one query, and never the whole log.
//
// Storage. The hashes tlog stores for record n (its leaf hash, then one
// interior hash per subtree that leaf completes) have consecutive stored
// hash indexes starting at tlog.StoredHashIndex(0, n). They are kept in
// one insert-only document per record,
//
//	{_id: "<account>/<stored hash index of the leaf, 12 digits>",
//	 accountId, leaf: n, hashes: [<32 bytes>, …]}
//
// so the record of any stored hash index is found by arithmetic (see
// recordOf) and read by _id. A record written again on replay must equal
// the one stored, else the tree is inconsistent (ErrInconsistent). Beside
// them, a document per account {_id: account, size} says how far the tree
// reached: a hint that spares a restart the search, never trusted beyond
// the records themselves.
//
// The tree is maintained on append with O(log n) work per entry and no
// read: each account's right edge (the hashes of the complete subtrees its
// leaves divide into, the only ones a new leaf or the root needs) is kept
// in memory, like the log's head. When the tree is behind the entries (a
// crash between the entry insert and the tree write, another replica
// appended, or a log written before the tree existed) Extend reads the
// missing entries and catches up: the migration of an existing log is its
// first catch-up, which builds the whole tree once.
package tree

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/bits"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"
)

// Collections of the compliance database the tree is stored in.
const (
	HashesCollection = "tree_hashes"
	SizesCollection  = "tree_sizes"
)

// ErrMissing says that a stored hash a root or proof needs is not in the
// store: the size asked for is beyond the tree (or the store lost it).
var ErrMissing = errors.New("tree hash not stored")

// ErrInconsistent says that the stored tree does not agree with the
// entries or with itself: a record written again differs from the stored
// one, or the stored right edge differs from the one this process built.
// Retrying cannot cure it; verifying the log says where.
var ErrInconsistent = errors.New("stored tree does not match the entries")

// EmptyRoot is the root of a tree with no leaves, RFC 6962's SHA-256 of
// the empty string.
var EmptyRoot = tlog.Hash(sha256.Sum256(nil))

// Leaves reads the leaf data of account's entries seq from, from+1, … up
// to n of them, in order, and stops before the first missing entry.
type Leaves func(ctx context.Context, account string, from int64, n int) ([][]byte, error)

// Config says where a Tree is stored and where its leaves come from.
type Config struct {
	// DB holds HashesCollection, and SizesCollection, only read: the
	// size hints written there before they moved to Sizes.
	DB *mongo.Database
	// Sizes holds each account's size hint: the "size" field of the
	// document whose _id is the account. Extend writes it; the caller of
	// ExtendAll writes it for the trees that call grows.
	Sizes *mongo.Collection
	// Leaves reads entries the tree has not seen.
	Leaves Leaves
}

// Tree is the per-account trees of one compliance log.
type Tree struct {
	hashes, sizes *mongo.Collection
	oldSizes      *mongo.Collection // SizesCollection (see Config.DB)
	leaves        Leaves

	// locks serialize the extension of one account's tree in this
	// process (an append and a catch-up may race); striped so that they
	// stay few however many accounts there are.
	locks [64]sync.Mutex

	mu    sync.Mutex
	edges map[string]*Builder

	// tops keeps the records of the large subtrees that proofs read
	// (see readTop).
	tops *lru.Cache[string, []tlog.Hash]
}

// New returns the trees stored in cfg.DB.
func New(cfg Config) *Tree {
	return &Tree{
		hashes:   cfg.DB.Collection(HashesCollection),
		sizes:    cfg.Sizes,
		oldSizes: cfg.DB.Collection(SizesCollection),
		leaves:   cfg.Leaves,
		edges:    map[string]*Builder{},
		tops:     must(lru.New[string, []tlog.Hash](topRecords)),
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Forget drops the right edges kept in memory, as when this process stops
// owning the accounts' partition: the next use reads them from the store.
func (t *Tree) Forget() {
	t.mu.Lock()
	clear(t.edges)
	t.mu.Unlock()
}

func (t *Tree) stripe(account string) int {
	h := fnv.New32a()
	h.Write([]byte(account))
	return int(h.Sum32() % uint32(len(t.locks)))
}

func (t *Tree) lock(account string) func() {
	m := &t.locks[t.stripe(account)]
	m.Lock()
	return m.Unlock
}

func (t *Tree) cached(account string) *Builder {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.edges[account]
}

func (t *Tree) remember(account string, b *Builder) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b == nil {
		delete(t.edges, account)
	} else {
		t.edges[account] = b
	}
}

// extendChunk bounds the leaves read and the records written at once
// while catching up.
const extendChunk = 256

// Extend grows account's tree to to leaves, or as far as the entries go
// when one is missing before, and returns its size, which may be larger
// when the tree had grown further. known gives the leaf data of entries
// the caller just wrote (nil when none), so that an append reads nothing;
// the other leaves are read from the entries. On an error the size is how
// far the tree got.
func (t *Tree) Extend(ctx context.Context, account string, to int64, known func(seq int64) ([]byte, bool)) (int64, error) {
	defer t.lock(account)()
	b := t.cached(account)
	if b == nil {
		var err error
		if b, err = t.load(ctx, account); err != nil {
			return 0, err
		}
	} else {
		b = b.clone()
	}
	if known == nil {
		known = func(int64) ([]byte, bool) { return nil, false }
	}
	start := b.Size()
	for b.Size() < to {
		first := b.Size() + 1 // the seq of the next leaf
		n := int(min(to-b.Size(), extendChunk))
		var data [][]byte
		for seq := first; len(data) < n; seq++ {
			d, ok := known(seq)
			if !ok {
				break
			}
			data = append(data, d)
		}
		short := false
		if len(data) == 0 {
			// Read the run of entries the caller does not know.
			run := 1
			for run < n {
				if _, ok := known(first + int64(run)); ok {
					break
				}
				run++
			}
			var err error
			if data, err = t.leaves(ctx, account, first, run); err != nil {
				t.remember(account, nil)
				return first - 1, fmt.Errorf("tree of %s: %w", account, err)
			}
			short = len(data) < run
		}
		records := make([][]tlog.Hash, len(data))
		for i, d := range data {
			var err error
			if records[i], err = b.Add(d); err != nil {
				t.remember(account, nil)
				return first - 1, fmt.Errorf("tree of %s at %d: %w", account, first+int64(i), err)
			}
		}
		if err := t.put(ctx, account, first-1, records); err != nil {
			t.remember(account, nil)
			return first - 1, err
		}
		if short {
			break // an entry is missing: the tree cannot go past it
		}
	}
	t.remember(account, b)
	if b.Size() > start {
		t.hint(ctx, account, b.Size())
	}
	return b.Size(), nil
}

// Growth is an account's tree to grow over entries a caller just wrote:
// To leaves, Known giving the leaf data of the entries it wrote.
type Growth struct {
	Account string
	To      int64
	Known   func(seq int64) ([]byte, bool)
	// New says that the account had no entry before this growth's (its
	// first, at seq 1, was just written): its tree is then empty, and
	// ExtendAll does not look up a size hint or an edge for it. A tree
	// grows only over durable entries, so no tree of the account can
	// exist; records left in the store anyway (a log emptied by hand)
	// collide with the new ones, which must then equal them, as any
	// record stored already must.
	New bool
}

// ExtendAll grows several accounts' trees as Extend does, and returns
// each one's size. The trees whose right edge is known and whose new
// leaves are all known (the common case: one process appends to its
// partitions' accounts) cost one insert of every account's records,
// whatever the number of accounts (the edges not in memory are read
// first, in parallel, but for the new accounts', which are empty); their
// size hints are the caller's to write, from the sizes returned, with
// writes of its own (the ledger's head hints). The others go through
// Extend, which reads what it lacks and writes its own hint. A record
// stored already must equal the new one, as in Extend.
// One account's tree found inconsistent (ErrInconsistent, returned with
// the sizes) does not keep the others from growing.
func (t *Tree) ExtendAll(ctx context.Context, gs []Growth) ([]int64, error) {
	sizes := make([]int64, len(gs))
	type grown struct {
		g      int
		b      *Builder
		first  int64 // the leaf of its first record
		before int64
		recs   [][]tlog.Hash
	}
	var fast []grown
	var slow []int
	var inconsistent error // the last ErrInconsistent of an account; the others go on
	unlock := t.lockAll(gs)
	// The edges not in memory (accounts new to this process), read in
	// parallel: a lookup of the size hint each, and of the edge when
	// there is one.
	edges := make([]*Builder, len(gs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(lookupsInFlight)
	for i, gr := range gs {
		if edges[i] = t.cached(gr.Account); edges[i] != nil || gr.Known == nil {
			continue
		}
		if gr.New {
			edges[i] = NewBuilder()
			continue
		}
		g.Go(func() error {
			b, err := t.load(gctx, gr.Account)
			if err == nil {
				t.remember(gr.Account, b)
				edges[i] = b
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		unlock()
		return nil, err
	}
	for i, g := range gs {
		b := edges[i]
		if b == nil || g.Known == nil || b.Size() >= g.To {
			slow = append(slow, i)
			continue
		}
		b = b.clone()
		gr := grown{g: i, b: b, first: b.Size(), before: b.Size()}
		for b.Size() < g.To {
			d, ok := g.Known(b.Size() + 1)
			if !ok {
				break
			}
			hs, err := b.Add(d)
			if err != nil {
				unlock()
				return nil, fmt.Errorf("tree of %s at %d: %w", g.Account, b.Size()+1, err)
			}
			gr.recs = append(gr.recs, hs)
		}
		if b.Size() < g.To {
			// A leaf it does not know: Extend reads it.
			slow = append(slow, i)
			continue
		}
		fast = append(fast, gr)
	}
	if len(fast) > 0 {
		var docs []any
		for _, gr := range fast {
			for j, hs := range gr.recs {
				docs = append(docs, NewRecord(gs[gr.g].Account, gr.first+int64(j), hs))
			}
		}
		_, err := t.hashes.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		if err != nil && !onlyDuplicates(err) {
			for _, gr := range fast {
				t.remember(gs[gr.g].Account, nil)
			}
			unlock()
			return nil, fmt.Errorf("tree records of %d accounts: %w", len(fast), mongox.Classify(err))
		}
		dup := err != nil
		for k, gr := range fast {
			account := gs[gr.g].Account
			if dup {
				// Some were stored already: each must be the one built.
				if err := t.same(ctx, account, gr.first, gr.recs); err != nil {
					t.remember(account, nil)
					if !errors.Is(err, ErrInconsistent) {
						for _, rest := range fast[k+1:] {
							t.remember(gs[rest.g].Account, nil)
						}
						unlock()
						return nil, err
					}
					inconsistent = err
					fast[k].b = nil
					sizes[gr.g] = gr.before
					continue
				}
			}
			t.remember(account, gr.b)
			sizes[gr.g] = gr.b.Size()
		}
	}
	unlock()
	for _, i := range slow {
		var err error
		sizes[i], err = t.Extend(ctx, gs[i].Account, gs[i].To, gs[i].Known)
		if errors.Is(err, ErrInconsistent) {
			inconsistent = err
		} else if err != nil {
			return nil, err
		}
	}
	return sizes, inconsistent
}

// lockAll takes the locks of the accounts of gs (each stripe once, in
// order, so that two callers never wait for each other in a circle) and
// returns their release.
func (t *Tree) lockAll(gs []Growth) func() {
	var take [len(t.locks)]bool
	for _, g := range gs {
		take[t.stripe(g.Account)] = true
	}
	for i := range take {
		if take[i] {
			t.locks[i].Lock()
		}
	}
	return func() {
		for i := range take {
			if take[i] {
				t.locks[i].Unlock()
			}
		}
	}
}

// Head returns account's tree size and root after extending it to to
// leaves (see Extend), as Heads does for one account.
func (t *Tree) Head(ctx context.Context, account string, to int64) (int64, tlog.Hash, error) {
	h := t.Heads(ctx, []Query{{Account: account, To: to}})[0]
	return h.Size, h.Root, h.Err
}

// Query asks Heads for account's tree extended to To leaves and, when
// From is above 0 and below its size, for the consistency proof from the
// tree of From leaves.
type Query struct {
	Account  string
	To, From int64
}

// HeadOf is Heads' answer for one Query: the tree's size and root, or
// Err; and the proof asked for, or ProofErr.
type HeadOf struct {
	Size          int64
	Root          tlog.Hash
	Proof         tlog.TreeProof
	Err, ProofErr error
}

// headsInFlight is how many accounts' trees Heads catches up at once.
const headsInFlight = 8

// Heads returns the size and root of each account's tree after extending
// it (see Extend: nothing is read when the tree is in memory and
// current), and the consistency proofs asked for. The roots are computed
// from the stored right edges, which must equal the ones this process
// built: a tree rewritten in the store under a running service is
// ErrInconsistent (and forgotten, so that the next call works from the
// store alone). The edges and the proofs' hashes of every account are
// read together, in finds by _id of up to recordsBatch records: a round
// of many accounts costs a command or two, not two per account.
func (t *Tree) Heads(ctx context.Context, qs []Query) []HeadOf {
	out := make([]HeadOf, len(qs))
	var g errgroup.Group
	g.SetLimit(headsInFlight)
	for i, q := range qs {
		g.Go(func() error {
			out[i].Size, out[i].Err = t.Extend(ctx, q.Account, q.To, nil)
			return nil
		})
	}
	_ = g.Wait()
	type wanted struct {
		edge, proof []int64
		built       *Builder
	}
	ws := make([]wanted, len(qs))
	var keys []string
	seen := map[string]bool{}
	want := func(account string, indexes []int64) {
		for _, k := range recordKeys(account, indexes) {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	for i, q := range qs {
		size := out[i].Size
		if out[i].Err != nil {
			continue
		}
		if size == 0 {
			out[i].Root = EmptyRoot
			continue
		}
		ws[i].edge = edgeIndexes(size)
		want(q.Account, ws[i].edge)
		if b := t.cached(q.Account); b != nil && b.Size() == size {
			ws[i].built = b
		}
		if q.From > 0 && q.From < size {
			ws[i].proof = proofIndexes(size, q.From)
			want(q.Account, ws[i].proof)
		}
	}
	got, err := t.findAll(ctx, keys)
	for i, q := range qs {
		if out[i].Err != nil || ws[i].edge == nil {
			continue
		}
		if err != nil {
			out[i].Err = fmt.Errorf("tree of %s: %w", q.Account, err)
			continue
		}
		size := out[i].Size
		stored, err := pick(got, q.Account, ws[i].edge)
		if err != nil {
			out[i].Err = err
			continue
		}
		if b := ws[i].built; b != nil {
			if x, ok := b.differs(ws[i].edge, stored); ok {
				t.remember(q.Account, nil)
				out[i].Err = fmt.Errorf("tree of %s at size %d: stored hash %d differs from the one built from the entries: %w",
					q.Account, size, x, ErrInconsistent)
				continue
			}
		}
		if out[i].Root, out[i].Err = tlog.TreeHash(size, fixedReader(ws[i].edge, stored)); out[i].Err != nil {
			continue
		}
		if ws[i].proof != nil {
			hashes, err := pick(got, q.Account, ws[i].proof)
			if err == nil {
				out[i].Proof, err = tlog.ProveTree(size, q.From, fixedReader(ws[i].proof, hashes))
			}
			out[i].ProofErr = err
		}
	}
	return out
}

// differs returns the first of the stored hashes at indexes (of b's
// right edge) that is not the one b holds.
func (b *Builder) differs(indexes []int64, stored []tlog.Hash) (int64, bool) {
	for i, x := range indexes {
		if b.edge[x] != stored[i] {
			return x, true
		}
	}
	return 0, false
}

// proofIndexes returns the stored hash indexes the consistency proof from
// size from to size to reads (tlog.ProveTree's), in its order.
func proofIndexes(to, from int64) []int64 {
	var out []int64
	_, _ = tlog.ProveTree(to, from, tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out = indexes
		return nil, errRecorded
	}))
	return out
}

var errRecorded = errors.New("indexes recorded")

// Root returns the root of account's stored tree at size leaves, from the
// records of its complete subtrees (at most log2(size)+1), read at once.
func (t *Tree) Root(ctx context.Context, account string, size int64) (tlog.Hash, error) {
	if size < 0 {
		return tlog.Hash{}, fmt.Errorf("tree size %d", size)
	}
	if size == 0 {
		return EmptyRoot, nil
	}
	return tlog.TreeHash(size, t.Reader(ctx, account))
}

// ProveRecord returns the inclusion proof of leaf index in account's
// stored tree of size leaves, from O(log size) records read in one query.
func (t *Tree) ProveRecord(ctx context.Context, account string, size, index int64) (tlog.RecordProof, error) {
	if index < 0 || index >= size {
		return nil, fmt.Errorf("leaf %d is not in a tree of size %d", index, size)
	}
	return tlog.ProveRecord(size, index, t.Reader(ctx, account))
}

// ProveTree returns the proof that account's stored tree of to leaves
// extends the one of from leaves, from O(log to) records read in one
// query.
func (t *Tree) ProveTree(ctx context.Context, account string, to, from int64) (tlog.TreeProof, error) {
	if from < 1 || from > to {
		return nil, fmt.Errorf("no consistency proof from size %d to %d", from, to)
	}
	return tlog.ProveTree(to, from, t.Reader(ctx, account))
}

// Reader reads account's stored hashes for roots and proofs, a lookup by
// _id per record that holds some of them, but for the records of large
// subtrees read before (see topLevel).
func (t *Tree) Reader(ctx context.Context, account string) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		return t.readTops(ctx, account, indexes)
	})
}

// A proof in a tree of n leaves reads about log2(n) records, one per
// level, and the records of the upper levels are the same for every
// proof: the record of leaf k holds the hash of a subtree of 2^topLevel
// leaves or more when (k+1) is a multiple of 2^topLevel. Those records
// read by proofs and roots are kept, up to topRecords of them, so that a
// proof in a log of a million entries reads about as many records as one
// in a log of a few hundred. A stored record never changes (insert-only,
// and a replay must equal it), so a kept one is what the store holds, or
// held before someone rewrote it: a proof from it is a proof of the tree
// the log built and signed. The checks that look for a rewritten tree
// (the right edge compared before signing, verify) read the store.
const (
	topLevel   = 8
	topRecords = 1 << 13
)

func isTop(leaf int64) bool { return (leaf+1)&(1<<topLevel-1) == 0 }

// recordsBatch is how many records one find of Records asks for, and
// recordsInFlight how many such finds it keeps in flight.
const (
	recordsBatch    = 256
	recordsInFlight = 4
)

// Records returns the stored hashes of account's records (leaves) from,
// from+1, … n of them, read in finds by _id of up to recordsBatch keys, a
// few in flight at once; nil for a record not stored.
func (t *Tree) Records(ctx context.Context, account string, from int64, n int) ([][]tlog.Hash, error) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = Key(account, tlog.StoredHashIndex(0, from+int64(i)))
	}
	got, err := t.findAll(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("tree of %s from %d: %w", account, from, err)
	}
	out := make([][]tlog.Hash, n)
	for i, k := range keys {
		out[i] = got[k]
	}
	return out, nil
}

// Key is the _id of account's record whose leaf hash has stored hash
// index index.
func Key(account string, index int64) string { return fmt.Sprintf("%s/%012d", account, index) }

// Record is a record's stored hashes as stored.
type Record struct {
	ID      string   `bson:"_id"`
	Account string   `bson:"accountId"`
	Leaf    int64    `bson:"leaf"`
	Hashes  [][]byte `bson:"hashes"`
}

// NewRecord returns the document of account's record leaf.
func NewRecord(account string, leaf int64, hashes []tlog.Hash) Record {
	r := Record{ID: Key(account, tlog.StoredHashIndex(0, leaf)), Account: account, Leaf: leaf, Hashes: make([][]byte, len(hashes))}
	for i, h := range hashes {
		r.Hashes[i] = h[:]
	}
	return r
}

func (r Record) hashes() ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(r.Hashes))
	for i, h := range r.Hashes {
		if len(h) != tlog.HashSize {
			return nil, fmt.Errorf("record %s: hash %d has %d bytes: %w", r.ID, i, len(h), ErrInconsistent)
		}
		out[i] = tlog.Hash(h)
	}
	return out, nil
}

// recordOf returns the leaf whose record holds stored hash index, and
// where in the record it is: the hash at level l of subtree k is stored
// with the last leaf of that subtree, as its l-th hash.
func recordOf(index int64) (leaf int64, pos int) {
	level, k := tlog.SplitStoredHashIndex(index)
	return (k+1)<<level - 1, level
}

// read returns account's stored hashes at indexes, from one query of the
// records holding them.
func (t *Tree) read(ctx context.Context, account string, indexes []int64) ([]tlog.Hash, error) {
	got, err := t.find(ctx, recordKeys(account, indexes))
	if err != nil {
		return nil, fmt.Errorf("tree of %s: %w", account, err)
	}
	return pick(got, account, indexes)
}

// readTops is read for roots and proofs: the records of large subtrees
// come from those kept when they are, and are kept when read.
func (t *Tree) readTops(ctx context.Context, account string, indexes []int64) ([]tlog.Hash, error) {
	top := map[string]bool{}
	for _, x := range indexes {
		if leaf, _ := recordOf(x); isTop(leaf) {
			top[Key(account, tlog.StoredHashIndex(0, leaf))] = true
		}
	}
	got := map[string][]tlog.Hash{}
	var keys []string
	for _, k := range recordKeys(account, indexes) {
		if r, ok := t.tops.Get(k); ok && top[k] {
			got[k] = r
		} else {
			keys = append(keys, k)
		}
	}
	found, err := t.find(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("tree of %s: %w", account, err)
	}
	for k, r := range found {
		got[k] = r
		if top[k] {
			t.tops.Add(k, r)
		}
	}
	return pick(got, account, indexes)
}

// recordKeys returns the keys of account's records that hold the stored
// hashes at indexes, each once.
func recordKeys(account string, indexes []int64) []string {
	keys := make([]string, 0, len(indexes))
	seen := map[string]bool{}
	for _, x := range indexes {
		leaf, _ := recordOf(x)
		k := Key(account, tlog.StoredHashIndex(0, leaf))
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// pick returns account's stored hashes at indexes from the records read
// (got, by key); ErrMissing when one is not there.
func pick(got map[string][]tlog.Hash, account string, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		leaf, pos := recordOf(x)
		r, ok := got[Key(account, tlog.StoredHashIndex(0, leaf))]
		if !ok || pos >= len(r) {
			return nil, fmt.Errorf("tree of %s: hash %d (leaf %d): %w", account, x, leaf, ErrMissing)
		}
		out[i] = r[pos]
	}
	return out, nil
}

// findAll reads the records of keys, of any accounts and any number, in
// finds of up to recordsBatch keys, recordsInFlight of them at once.
func (t *Tree) findAll(ctx context.Context, keys []string) (map[string][]tlog.Hash, error) {
	out := make(map[string][]tlog.Hash, len(keys))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(recordsInFlight)
	for lo := 0; lo < len(keys); lo += recordsBatch {
		part := keys[lo:min(lo+recordsBatch, len(keys))]
		g.Go(func() error {
			got, err := t.find(gctx, part)
			mu.Lock()
			defer mu.Unlock()
			maps.Copy(out, got)
			return err
		})
	}
	return out, g.Wait()
}

// lookupsInFlight is how many size hints and edges ExtendAll reads at
// once.
const lookupsInFlight = 8

// find reads the records of keys (at most a few hundred) in one query by
// _id, which every store answers from its _id index (the embedded one
// through its front, see dev/embedded); a record not stored is absent
// from the map.
func (t *Tree) find(ctx context.Context, keys []string) (map[string][]tlog.Hash, error) {
	out := make(map[string][]tlog.Hash, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	cur, err := t.hashes.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: keys}}}})
	if err != nil {
		return nil, mongox.Classify(err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var r Record
		if err := cur.Decode(&r); err != nil {
			return nil, err
		}
		hs, err := r.hashes()
		if err != nil {
			return nil, err
		}
		out[r.ID] = hs
	}
	if err := cur.Err(); err != nil {
		return nil, mongox.Classify(err)
	}
	return out, nil
}

// put stores the records of leaves first, first+1, …, each once: a record
// already stored (a replay, or another replica that got there first) must
// equal the new one.
func (t *Tree) put(ctx context.Context, account string, first int64, records [][]tlog.Hash) error {
	if len(records) == 0 {
		return nil
	}
	docs := make([]any, len(records))
	for i, hs := range records {
		docs[i] = NewRecord(account, first+int64(i), hs)
	}
	_, err := t.hashes.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		return nil
	}
	if !onlyDuplicates(err) {
		return fmt.Errorf("tree of %s from %d: %w", account, first, mongox.Classify(err))
	}
	return t.same(ctx, account, first, records)
}

// same checks that account's stored records of leaves first, first+1, …
// are records.
func (t *Tree) same(ctx context.Context, account string, first int64, records [][]tlog.Hash) error {
	stored, err := t.Records(ctx, account, first, len(records))
	if err != nil {
		return err
	}
	for i, hs := range records {
		if stored[i] == nil {
			return fmt.Errorf("tree of %s: record %d not stored", account, first+int64(i))
		}
		if !equal(stored[i], hs) {
			return fmt.Errorf("tree of %s: stored record %d differs from the one built from entry %d: %w",
				account, first+int64(i), first+int64(i)+1, ErrInconsistent)
		}
	}
	return nil
}

func onlyDuplicates(err error) bool {
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil || len(bwe.WriteErrors) == 0 {
		return mongox.IsDuplicateKey(err)
	}
	for _, we := range bwe.WriteErrors {
		if !mongo.IsDuplicateKeyError(we) {
			return false
		}
	}
	return true
}

func equal(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type sizeDoc struct {
	Size int64 `bson:"size"`
}

// load reads account's right edge from the store, at the size its hint
// says (0 without one: the tree is then built again from the first entry,
// each stored record checked).
func (t *Tree) load(ctx context.Context, account string) (*Builder, error) {
	h, err := t.sizeHint(ctx, t.sizes, account)
	if err == nil && h.Size <= 0 {
		h, err = t.sizeHint(ctx, t.oldSizes, account)
	}
	if err != nil {
		return nil, err
	}
	b := &Builder{edge: map[int64]tlog.Hash{}}
	if h.Size <= 0 {
		return b, nil
	}
	indexes := edgeIndexes(h.Size)
	hashes, err := t.read(ctx, account, indexes)
	if err != nil {
		return nil, err
	}
	b.size = h.Size
	for i, x := range indexes {
		b.edge[x] = hashes[i]
	}
	return b, nil
}

// sizeHint reads account's size hint from coll; a zero size without one.
func (t *Tree) sizeHint(ctx context.Context, coll *mongo.Collection, account string) (sizeDoc, error) {
	var h sizeDoc
	err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: account}}).Decode(&h)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return sizeDoc{}, fmt.Errorf("tree size of %s: %w", account, mongox.Classify(err))
	}
	return h, nil
}

// hint records size as account's tree size unless a larger one is. The
// hint only saves work, so failing to write it fails nothing.
func (t *Tree) hint(ctx context.Context, account string, size int64) {
	_, _ = t.sizes.UpdateOne(ctx, bson.D{{Key: "_id", Value: account}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "size", Value: size}}}},
		options.UpdateOne().SetUpsert(true))
}

// Builder computes a tree leaf by leaf in memory, keeping only its right
// edge: O(log n) space and work per leaf.
type Builder struct {
	size int64
	// edge holds the hash of each complete subtree the leaves divide
	// into, by stored hash index (see edgeIndexes).
	edge map[int64]tlog.Hash
}

// NewBuilder returns the builder of an empty tree.
func NewBuilder() *Builder { return &Builder{edge: map[int64]tlog.Hash{}} }

// Size is the number of leaves added.
func (b *Builder) Size() int64 { return b.size }

// Add adds the leaf data and returns the stored hashes of its record
// (tlog.StoredHashes).
func (b *Builder) Add(data []byte) ([]tlog.Hash, error) {
	hs, err := tlog.StoredHashes(b.size, data, b)
	if err != nil {
		return nil, err
	}
	base := tlog.StoredHashIndex(0, b.size)
	b.size++
	next := make(map[int64]tlog.Hash, bits.OnesCount64(uint64(b.size)))
	for _, x := range edgeIndexes(b.size) {
		if h, ok := b.edge[x]; ok {
			next[x] = h
		} else {
			next[x] = hs[x-base]
		}
	}
	b.edge = next
	return hs, nil
}

// Root is the tree's root.
func (b *Builder) Root() (tlog.Hash, error) {
	if b.size == 0 {
		return EmptyRoot, nil
	}
	return tlog.TreeHash(b.size, b)
}

// ReadHashes serves the hashes of the right edge, all tlog needs to add a
// leaf or compute the root.
func (b *Builder) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := b.edge[x]
		if !ok {
			return nil, fmt.Errorf("hash %d is not on the right edge of a tree of size %d", x, b.size)
		}
		out[i] = h
	}
	return out, nil
}

func (b *Builder) clone() *Builder {
	c := &Builder{size: b.size, edge: make(map[int64]tlog.Hash, len(b.edge))}
	for k, v := range b.edge {
		c.edge[k] = v
	}
	return c
}

// edgeIndexes returns the stored hash indexes of the complete subtrees a
// tree of size leaves divides into, left to right: one per bit set in
// size, the subtree of 2^l leaves at level l.
func edgeIndexes(size int64) []int64 {
	var out []int64
	for l := 62; l >= 0; l-- {
		if size>>l&1 == 1 {
			out = append(out, tlog.StoredHashIndex(l, size>>l-1))
		}
	}
	return out
}

// fixedReader serves the given hashes.
func fixedReader(indexes []int64, hashes []tlog.Hash) tlog.HashReader {
	return tlog.HashReaderFunc(func(want []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(want))
		for i, w := range want {
			found := false
			for j, x := range indexes {
				if x == w {
					out[i], found = hashes[j], true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("hash %d not read", w)
			}
		}
		return out, nil
	})
}
