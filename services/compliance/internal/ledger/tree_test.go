package ledger_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/rcm-platform/rcm/services/compliance/internal/tree"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/mod/sumdb/tlog"
)

// independentRoots returns the roots of account's tree at every size from
// 1 to n, computed by transparency-dev/merkle's compact ranges from the
// entries as stored, and the leaf hashes.
func independentRoots(t *testing.T, l *ledger.Ledger, account string, n int64) (roots, leaves [][]byte) {
	t.Helper()
	ctx := context.Background()
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for seq := int64(1); seq <= n; seq++ {
		e, found, err := l.Get(ctx, account, seq)
		if err != nil || !found {
			t.Fatalf("entry %d: %v %v", seq, found, err)
		}
		data, err := auditlog.LeafData(e)
		if err != nil {
			t.Fatal(err)
		}
		stored, found, err := l.LeafData(ctx, account, seq)
		if err != nil || !found || !bytes.Equal(stored, data) {
			t.Fatalf("LeafData(%d): got %s %v %v, want %s", seq, stored, found, err, data)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(data)
		leaves = append(leaves, leaf)
		if err := r.Append(leaf, nil); err != nil {
			t.Fatal(err)
		}
		root, err := r.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, root)
	}
	return roots, leaves
}

// TestProofsVerifyWithAnotherImplementation: the roots, inclusion proofs
// and consistency proofs the ledger produces (x/mod's tlog over the stored
// hashes) verify with transparency-dev/merkle, against roots it computes
// itself from the entries.
func TestProofsVerifyWithAnotherImplementation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, l := newLedger(t)
	const account = "org_p"
	evs := optOuts(t, account, 37)
	for i, batch := range []int{1, 2, 5, 13, 16} {
		from := []int{0, 1, 3, 8, 21}[i]
		if _, err := l.Append(ctx, account, evs[from:from+batch]); err != nil {
			t.Fatal(err)
		}
	}
	size, root, err := l.TreeHead(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	roots, leaves := independentRoots(t, l, account, 37)
	if size != 37 || !bytes.Equal(root[:], roots[36]) {
		t.Fatalf("tree head: got %d %x, want 37 %x", size, root, roots[36])
	}

	h := rfc6962.DefaultHasher
	for n := int64(1); n <= size; n++ {
		got, err := l.RootAt(ctx, account, n)
		if err != nil || !bytes.Equal(got[:], roots[n-1]) {
			t.Fatalf("root at %d: got %x %v, want %x", n, got, err, roots[n-1])
		}
		for i := int64(0); i < n; i++ {
			p, err := l.ProveRecord(ctx, account, n, i)
			if err != nil {
				t.Fatalf("prove leaf %d in %d: %v", i, n, err)
			}
			if err := proof.VerifyInclusion(h, uint64(i), uint64(n), leaves[i], hashes(p), roots[n-1]); err != nil {
				t.Fatalf("inclusion of leaf %d in %d: %v", i, n, err)
			}
		}
		for m := int64(1); m <= n; m++ {
			p, err := l.ProveTree(ctx, account, n, m)
			if err != nil {
				t.Fatalf("prove %d to %d: %v", m, n, err)
			}
			if err := proof.VerifyConsistency(h, uint64(m), uint64(n), hashes(p), roots[m-1], roots[n-1]); err != nil {
				t.Fatalf("consistency of %d to %d: %v", m, n, err)
			}
		}
	}
	// A proof is refused for a tree larger than the account's.
	if _, err := l.ProveRecord(ctx, account, 38, 3); !errors.Is(err, ledger.ErrNotInTree) {
		t.Fatalf("proof in a tree of 38: got %v, want ErrNotInTree", err)
	}
	if _, err := l.RootAt(ctx, account, 40); !errors.Is(err, ledger.ErrNotInTree) {
		t.Fatalf("root at 40: got %v, want ErrNotInTree", err)
	}

	// Consistent: with every earlier tree; not with another root, nor
	// with a tree larger than the current one.
	for m := int64(1); m <= size; m++ {
		ok, err := l.Consistent(ctx, account, m, tlog.Hash(roots[m-1]))
		if err != nil || !ok {
			t.Fatalf("consistent with %d: got %v %v, want true", m, ok, err)
		}
	}
	other := tlog.Hash(roots[20])
	other[0] ^= 1
	for _, tc := range []struct {
		size int64
		root tlog.Hash
	}{{21, other}, {37, other}, {38, root}, {21, tlog.Hash(roots[19])}} {
		if ok, err := l.Consistent(ctx, account, tc.size, tc.root); err != nil || ok {
			t.Fatalf("consistent with %d %x: got %v %v, want false", tc.size, tc.root, ok, err)
		}
	}

	v, err := l.Verify(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.TreeSize != 37 || v.RootHash != base64.StdEncoding.EncodeToString(roots[36]) {
		t.Fatalf("verify: got %+v, want ok with tree 37 and root %x", v, roots[36])
	}
	empty, err := l.Verify(ctx, "org_nobody")
	if err != nil || !empty.OK || empty.TreeSize != 0 || empty.RootHash != base64.StdEncoding.EncodeToString(h.EmptyRoot()) {
		t.Fatalf("verify of an empty log: got %+v %v, want tree 0 with RFC 6962's empty root", empty, err)
	}
}

func hashes[P ~[]tlog.Hash](p P) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}

// dropTree deletes account's tree records of leaves from on (and the
// size hint when hint is set), as a crash between the entry insert and
// the tree write leaves it, or the tree before it existed.
func dropTree(t *testing.T, db *mongo.Database, account string, from int64, hint bool) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.Collection(tree.HashesCollection).DeleteMany(ctx, bson.D{
		{Key: "accountId", Value: account}, {Key: "leaf", Value: bson.D{{Key: "$gte", Value: from}}}}); err != nil {
		t.Fatal(err)
	}
	if hint {
		if _, err := db.Collection(auditlog.HeadsCollection).UpdateOne(ctx, bson.D{{Key: "_id", Value: account}},
			bson.D{{Key: "$unset", Value: bson.D{{Key: "size", Value: ""}}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// setSizeHint sets account's tree size hint, the size field of its head
// hint's document, to size.
func setSizeHint(t *testing.T, db *mongo.Database, account string, size int64) {
	t.Helper()
	if _, err := db.Collection(auditlog.HeadsCollection).UpdateOne(context.Background(), bson.D{{Key: "_id", Value: account}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "size", Value: size}}}}); err != nil {
		t.Fatal(err)
	}
}

// TestTreeCatchesUp: the tree behind its entries (a crash between the
// entry insert and the tree write, with or without the size hint written;
// a log written before the tree existed; another process appending) is
// caught up by TreeHead, or by the next append, to the tree the entries
// make.
func TestTreeCatchesUp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		crash func(t *testing.T, db *mongo.Database, account string)
		// then is what the next process does first.
		appendNext bool
	}{
		{"tree missing its last records, hint behind", func(t *testing.T, db *mongo.Database, a string) {
			dropTree(t, db, a, 14, false)
			setSizeHint(t, db, a, 14)
		}, false},
		{"tree records written, hint not", func(t *testing.T, db *mongo.Database, a string) {
			setSizeHint(t, db, a, 9)
		}, false},
		{"a log from before the tree", func(t *testing.T, db *mongo.Database, a string) { dropTree(t, db, a, 0, true) }, false},
		{"a log from before the tree, appended to", func(t *testing.T, db *mongo.Database, a string) { dropTree(t, db, a, 0, true) }, true},
		{"tree missing its last records, appended to", func(t *testing.T, db *mongo.Database, a string) {
			dropTree(t, db, a, 7, false)
			setSizeHint(t, db, a, 7)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, l := newLedger(t)
			const account = "org_cu"
			evs := optOuts(t, account, 25)
			if _, err := l.Append(ctx, account, evs[:20]); err != nil {
				t.Fatal(err)
			}
			tt.crash(t, db, account)

			next := ledger.New(ledger.Config{DB: db, Now: time.Now})
			want := int64(20)
			if tt.appendNext {
				if _, err := next.Append(ctx, account, evs[20:]); err != nil {
					t.Fatal(err)
				}
				want = 25
			}
			size, root, err := next.TreeHead(ctx, account)
			if err != nil {
				t.Fatal(err)
			}
			roots, _ := independentRoots(t, next, account, want)
			if size != want || !bytes.Equal(root[:], roots[want-1]) {
				t.Fatalf("after catching up: got %d %x, want %d %x", size, root, want, roots[want-1])
			}
			v, err := next.Verify(ctx, account)
			if err != nil || !v.OK || v.TreeSize != want {
				t.Fatalf("verify after catching up: got %+v %v", v, err)
			}
		})
	}

	t.Run("another process appended", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		db, a := newLedger(t)
		b := ledger.New(ledger.Config{DB: db, Now: time.Now})
		const account = "org_two"
		evs := optOuts(t, account, 30)
		for i := 0; i < 30; i += 5 {
			w := a
			if i%10 == 5 {
				w = b
			}
			if _, err := w.Append(ctx, account, evs[i:i+5]); err != nil {
				t.Fatal(err)
			}
		}
		roots, _ := independentRoots(t, a, account, 30)
		for name, l := range map[string]*ledger.Ledger{"first": a, "second": b} {
			size, root, err := l.TreeHead(ctx, account)
			if err != nil || size != 30 || !bytes.Equal(root[:], roots[29]) {
				t.Fatalf("%s process: got %d %x %v, want 30 %x", name, size, root, err, roots[29])
			}
		}
	})
}

// TestVerifyChecksTheTree: the stored tree edited, cut or contradicting
// an edited entry is ok false at the first seq it does not hold, with a
// reason; a chain rewritten the careful way (an entry edited and every
// later one re-sealed) is caught by the tree it did not recompute.
func TestVerifyChecksTheTree(t *testing.T) {
	t.Parallel()
	const account = "org_vt"
	recordOf := func(leaf int64) bson.D {
		return bson.D{{Key: "_id", Value: tree.Key(account, tlog.StoredHashIndex(0, leaf))}}
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, db *mongo.Database)
		want   int64
		reason string
	}{
		{"a leaf hash edited", func(t *testing.T, db *mongo.Database) {
			editRecord(t, db, recordOf(4), 0)
		}, 5, "leaf hash of entry 5"},
		{"an interior hash edited", func(t *testing.T, db *mongo.Database) {
			editRecord(t, db, recordOf(7), 2) // the subtree of leaves 4 to 7
		}, 8, "hashes over entries up to 8"},
		{"a record deleted", func(t *testing.T, db *mongo.Database) {
			if _, err := db.Collection(tree.HashesCollection).DeleteOne(context.Background(), recordOf(10)); err != nil {
				t.Fatal(err)
			}
		}, 11, "entry 11 is not in the stored tree"},
		{"the chain re-sealed after an edit", func(t *testing.T, db *mongo.Database) {
			reseal(t, db, account, 3, 12)
		}, 3, "leaf hash of entry 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, l := newLedger(t)
			if _, err := l.Append(ctx, account, optOuts(t, account, 12)); err != nil {
				t.Fatal(err)
			}
			if v, err := l.Verify(ctx, account); err != nil || !v.OK || v.TreeSize != 12 {
				t.Fatalf("before tampering: got %+v %v", v, err)
			}
			tt.tamper(t, db)
			v, err := ledger.New(ledger.Config{DB: db, Now: time.Now}).Verify(ctx, account)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || v.FirstBrokenSeq == nil || *v.FirstBrokenSeq != tt.want || !strings.Contains(v.Reason, tt.reason) {
				t.Fatalf("got %+v (first broken %v), want broken at %d because %q", v, v.FirstBrokenSeq, tt.want, tt.reason)
			}
			if v.HeadSeq != 12 || v.TreeSize != 12 {
				t.Fatalf("got head %d and tree %d, want 12 and 12", v.HeadSeq, v.TreeSize)
			}
		})
	}
}

// TestASizeHintWhereItWasKeptBeforeIsRead: a log whose tree size hints
// are still in tree.SizesCollection (written before they moved into the
// heads' documents) keeps its tamper evidence: a fresh process starts
// from that hint, so a tree record deleted below it is not written again
// by the next append, and verify reports it.
func TestASizeHintWhereItWasKeptBeforeIsRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const account = "org_old"
	db, l := newLedger(t)
	evs := optOuts(t, account, 13)
	if _, err := l.Append(ctx, account, evs[:12]); err != nil {
		t.Fatal(err)
	}
	// The hint as it was kept before: in its own collection.
	dropTree(t, db, account, 12, true)
	if _, err := db.Collection(tree.SizesCollection).InsertOne(ctx, bson.D{{Key: "_id", Value: account}, {Key: "size", Value: 12}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(tree.HashesCollection).DeleteOne(ctx,
		bson.D{{Key: "_id", Value: tree.Key(account, tlog.StoredHashIndex(0, 10))}}); err != nil {
		t.Fatal(err)
	}
	fresh := ledger.New(ledger.Config{DB: db, Now: time.Now})
	if _, err := fresh.Append(ctx, account, evs[12:]); err != nil {
		t.Fatal(err)
	}
	v, err := fresh.Verify(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK || v.FirstBrokenSeq == nil || *v.FirstBrokenSeq != 11 || !strings.Contains(v.Reason, "entry 11 is not in the stored tree") {
		t.Fatalf("got %+v (first broken %v), want broken at 11: its record was deleted", v, v.FirstBrokenSeq)
	}
}

// editRecord flips a bit of hash pos of a stored tree record.
func editRecord(t *testing.T, db *mongo.Database, key bson.D, pos int) {
	t.Helper()
	ctx := context.Background()
	c := db.Collection(tree.HashesCollection)
	var r tree.Record
	if err := c.FindOne(ctx, key).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if pos >= len(r.Hashes) {
		t.Fatalf("record %s has %d hashes, want more than %d", r.ID, len(r.Hashes), pos)
	}
	r.Hashes[pos][0] ^= 1
	if _, err := c.ReplaceOne(ctx, key, r); err != nil {
		t.Fatal(err)
	}
}

// reseal edits entry seq of account and re-seals it and every later one
// up to head with the documented formula, as whoever holds the database
// could.
func reseal(t *testing.T, db *mongo.Database, account string, seq, head int64) {
	t.Helper()
	ctx := context.Background()
	c := db.Collection(auditlog.EntriesCollection)
	prev := ""
	for s := seq; s <= head; s++ {
		key := bson.D{{Key: "_id", Value: seqlog.Key(account, s)}}
		var d auditlog.Doc
		if err := c.FindOne(ctx, key).Decode(&d); err != nil {
			t.Fatal(err)
		}
		e, err := d.Entry()
		if err != nil {
			t.Fatal(err)
		}
		if s == seq {
			e.Actor.ID = "user_someone_else"
			prev = e.PrevHash
		}
		if err := auditlog.Seal(&e, prev); err != nil {
			t.Fatal(err)
		}
		prev = e.Hash
		nd, err := auditlog.ToDoc(e, seqlog.Key(account, s))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReplaceOne(ctx, key, nd); err != nil {
			t.Fatal(err)
		}
	}
	chain, err := seqlog.New(seqlog.Config{Docs: c, Heads: db.Collection(auditlog.HeadsCollection), LinkField: auditlog.LinkField}).LoadHead(ctx, account)
	if err != nil || chain.Seq != head || chain.Link != prev {
		t.Fatalf("re-sealed chain: got %+v %v, want head %d at %s", chain, err, head, prev)
	}
}

// TestATreeRewrittenUnderTheServiceIsRefused: a stored tree hash changed
// while the service runs is found by the next TreeHead, which refuses to
// give a head, and Consistent says false; the log itself goes on.
func TestATreeRewrittenUnderTheServiceIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, l := newLedger(t)
	const account = "org_rw"
	evs := optOuts(t, account, 10)
	if _, err := l.Append(ctx, account, evs[:8]); err != nil {
		t.Fatal(err)
	}
	_, root8, err := l.TreeHead(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	// The hash of leaves 0 to 7, the whole tree's root, is stored with
	// leaf 7 as its fourth hash.
	editRecord(t, db, bson.D{{Key: "_id", Value: tree.Key(account, tlog.StoredHashIndex(0, 7))}}, 3)
	if _, _, err := l.TreeHead(ctx, account); !errors.Is(err, ledger.ErrTreeInconsistent) {
		t.Fatalf("tree head after the rewrite: got %v, want ErrTreeInconsistent", err)
	}
	if _, err := l.Append(ctx, account, evs[8:]); err != nil {
		t.Fatalf("append after the rewrite: %v", err)
	}
	if ok, err := l.Consistent(ctx, account, 8, root8); err != nil || ok {
		t.Fatalf("consistent with the tree of 8 after the rewrite: got %v %v, want false", ok, err)
	}
	v, err := l.Verify(ctx, account)
	if err != nil || v.OK || v.FirstBrokenSeq == nil || *v.FirstBrokenSeq != 8 {
		t.Fatalf("verify after the rewrite: got %+v %v, want broken at 8", v, err)
	}
}

// storeCommands counts the commands a client sends, by collection.
type storeCommands struct {
	entries, tree, treeReads atomic.Int64
}

func (c *storeCommands) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		switch e.CommandName {
		case "find", "insert", "update", "getMore":
		default:
			return
		}
		coll, _ := e.Command.Lookup(e.CommandName).StringValueOK()
		switch coll {
		case tree.HashesCollection:
			c.tree.Add(1)
			if e.CommandName == "find" || e.CommandName == "getMore" {
				c.treeReads.Add(1)
			}
		default:
			c.entries.Add(1)
		}
	}}
}

// countedLedger returns a ledger in a database of its own, on a client
// whose store commands counts counts, and its database.
func countedLedger(t *testing.T) (*ledger.Ledger, *storeCommands, *mongo.Database) {
	t.Helper()
	counts := &storeCommands{}
	cl := mongotest.MonitoredClient(t, counts.monitor())
	db := cl.Database(mongotest.NewDatabase(t))
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	if err := l.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return l, counts, db
}

// TestAppendCostOfTheTree: growing the tree on append costs one store
// command a batch (the insert of its records) and no read once the edge
// is known; its size hint goes in the statement of the head hint, so an
// append costs three commands in all (the entries' insert, the records'
// insert, the hints). It logs both sides.
func TestAppendCostOfTheTree(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, counts, _ := countedLedger(t)
	const account, batches, batch = "org_cost", 10, 20
	evs := optOuts(t, account, batches*batch)
	// The first append finds the head and the tree's size hint.
	if _, err := l.Append(ctx, account, evs[:batch]); err != nil {
		t.Fatal(err)
	}
	entries0, tree0, reads0 := counts.entries.Load(), counts.tree.Load(), counts.treeReads.Load()
	for i := 1; i < batches; i++ {
		if _, err := l.Append(ctx, account, evs[i*batch:(i+1)*batch]); err != nil {
			t.Fatal(err)
		}
	}
	entries, treeCmds, reads := counts.entries.Load()-entries0, counts.tree.Load()-tree0, counts.treeReads.Load()-reads0
	t.Logf("%d appends of %d entries: %d store commands for the entries, %d for the tree (%d reads)",
		batches-1, batch, entries, treeCmds, reads)
	if treeCmds != batches-1 || reads != 0 {
		t.Fatalf("the tree cost %d store commands (%d reads) over %d appends, want 1 each and no read", treeCmds, reads, batches-1)
	}
	if entries != 2*(batches-1) {
		t.Fatalf("the entries and the hints cost %d store commands over %d appends, want 2 each", entries, batches-1)
	}
	if v, err := l.Verify(ctx, account); err != nil || !v.OK || v.TreeSize != batches*batch {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// TestARecordStoredDifferentlyIsNotOverwritten: catching up writes each
// record once; one already stored that differs from what the entries
// make (here after a crash before the size hint, with the record edited)
// is an inconsistency, never silently kept or replaced.
func TestARecordStoredDifferentlyIsNotOverwritten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, l := newLedger(t)
	const account = "org_dup"
	if _, err := l.Append(ctx, account, optOuts(t, account, 12)); err != nil {
		t.Fatal(err)
	}
	setSizeHint(t, db, account, 8)
	key := bson.D{{Key: "_id", Value: tree.Key(account, tlog.StoredHashIndex(0, 9))}}
	editRecord(t, db, key, 1)
	var before tree.Record
	if err := db.Collection(tree.HashesCollection).FindOne(ctx, key).Decode(&before); err != nil {
		t.Fatal(err)
	}

	next := ledger.New(ledger.Config{DB: db, Now: time.Now})
	if _, _, err := next.TreeHead(ctx, account); !errors.Is(err, ledger.ErrTreeInconsistent) {
		t.Fatalf("tree head: got %v, want ErrTreeInconsistent", err)
	}
	var after tree.Record
	if err := db.Collection(tree.HashesCollection).FindOne(ctx, key).Decode(&after); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after.Hashes[1], before.Hashes[1]) {
		t.Fatalf("the stored record was replaced")
	}
	v, err := next.Verify(ctx, account)
	if err != nil || v.OK || v.FirstBrokenSeq == nil || *v.FirstBrokenSeq != 10 {
		t.Fatalf("verify: got %+v %v, want broken at 10", v, err)
	}
}

// TestANewAccountsTreeIsNotLookedUp: the first entries of accounts that
// had none start their trees from nothing, without a lookup of a size
// hint or an edge, and the trees are the entries' own; an account with
// entries before is looked up once, as its tree may be larger than this
// process knows.
func TestANewAccountsTreeIsNotLookedUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, counts, db := countedLedger(t)
	accounts := []string{"org_new0", "org_new1", "org_new2", "org_new3"}
	var batches []ledger.Batch
	for _, a := range accounts {
		batches = append(batches, ledger.Batch{Account: a, Events: optOuts(t, a, 5)})
	}
	if _, err := l.AppendBatches(ctx, batches); err != nil {
		t.Fatal(err)
	}
	if reads := counts.treeReads.Load(); reads != 0 {
		t.Fatalf("the trees of %d new accounts cost %d reads, want none", len(accounts), reads)
	}

	// Another process: the accounts have entries, their trees are read.
	next := ledger.New(ledger.Config{DB: db, Now: time.Now})
	for i, a := range accounts {
		batches[i].Events = optOuts(t, a, 3)
	}
	before := counts.treeReads.Load()
	if _, err := next.AppendBatches(ctx, batches); err != nil {
		t.Fatal(err)
	}
	if reads := counts.treeReads.Load() - before; reads < int64(len(accounts)) {
		t.Fatalf("the trees of %d accounts with entries cost %d reads, want at least a size hint each", len(accounts), reads)
	}
	for _, a := range accounts {
		if v, err := next.Verify(ctx, a); err != nil || !v.OK || v.TreeSize != 8 {
			t.Fatalf("verify %s: %+v %v", a, v, err)
		}
	}
}
