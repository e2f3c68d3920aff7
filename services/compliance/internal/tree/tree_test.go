package tree_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/services/compliance/internal/tree"
	"go.mongodb.org/mongo-driver/v2/event"
	"golang.org/x/mod/sumdb/tlog"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

// reads counts the read commands a client sends to the store, and the
// records they ask for by _id.
type reads struct{ n, keys atomic.Int64 }

func (r *reads) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "find" || e.CommandName == "getMore" {
			r.n.Add(1)
		}
		if e.CommandName == "find" {
			if in, err := e.Command.LookupErr("filter", "_id", "$in"); err == nil {
				vals, _ := in.Array().Values()
				r.keys.Add(int64(len(vals)))
			} else if _, err := e.Command.LookupErr("filter", "_id"); err == nil {
				r.keys.Add(1)
			}
		}
	}}
}

// leafData is the synthetic leaf of seq: the tree does not look inside.
func leafData(seq int64) []byte { return fmt.Appendf(nil, `{"seq":%d}`, seq) }

// grown returns a fresh tree of account grown to n synthetic leaves,
// written the way a catch-up writes them, and the counter of its reads.
func grown(tb testing.TB, account string, n int64) (*tree.Tree, *reads) {
	tb.Helper()
	r := &reads{}
	cl := mongotest.MonitoredClient(tb, r.monitor())
	db := cl.Database(mongotest.NewDatabase(tb))
	tr := tree.New(tree.Config{
		DB: db, Sizes: db.Collection("heads"),
		Leaves: func(_ context.Context, _ string, from int64, k int) ([][]byte, error) {
			out := make([][]byte, 0, k)
			for seq := from; seq < from+int64(k) && seq <= n; seq++ {
				out = append(out, leafData(seq))
			}
			return out, nil
		},
	})
	size, err := tr.Extend(context.Background(), account, n, nil)
	if err != nil || size != n {
		tb.Fatalf("grow to %d: got %d %v", n, size, err)
	}
	return tr, r
}

// costs returns the store reads of a root, an inclusion proof and a
// consistency proof of tr, and of its head, each checked.
func costs(tb testing.TB, tr *tree.Tree, r *reads, account string, n int64) map[string]int64 {
	tb.Helper()
	ctx := context.Background()
	out := map[string]int64{}
	measure := func(name string, f func() error) {
		before := r.n.Load()
		if err := f(); err != nil {
			tb.Fatalf("%s at %d: %v", name, n, err)
		}
		out[name] = r.n.Load() - before
	}
	var root tlog.Hash
	measure("root", func() (err error) { root, err = tr.Root(ctx, account, n); return err })
	measure("head", func() error {
		size, h, err := tr.Head(ctx, account, n)
		if err == nil && (size != n || h != root) {
			err = fmt.Errorf("got %d %x, want %d %x", size, h, n, root)
		}
		return err
	})
	measure("inclusion proof", func() error {
		leaf := n / 3
		p, err := tr.ProveRecord(ctx, account, n, leaf)
		if err != nil {
			return err
		}
		return tlog.CheckRecord(p, n, root, leaf, tlog.RecordHash(leafData(leaf+1)))
	})
	old := n/2 + 1
	oldRoot, err := tr.Root(ctx, account, old)
	if err != nil {
		tb.Fatal(err)
	}
	measure("consistency proof", func() error {
		p, err := tr.ProveTree(ctx, account, n, old)
		if err != nil {
			return err
		}
		return tlog.CheckTree(p, n, root, old, oldRoot)
	})
	return out
}

// TestProofsCostOneStoreRead: a root, the head, an inclusion proof and a
// consistency proof each read the O(log n) records they need in one
// query by _id, in a tree of 4,096 leaves as in one of 100
// (BenchmarkProof takes it to 100,000).
func TestProofsCostOneStoreRead(t *testing.T) {
	t.Parallel()
	sizes := []int64{100, 4096}
	got := map[int64]map[string]int64{}
	for _, n := range sizes {
		account := fmt.Sprintf("org_%d", n)
		tr, r := grown(t, account, n)
		got[n] = costs(t, tr, r, account, n)
	}
	for op := range got[100] {
		t.Logf("%s: %d store reads at 100 leaves, %d at 4,096", op, got[100][op], got[4096][op])
		for _, n := range sizes {
			if got[n][op] != 1 {
				t.Errorf("%s at %d leaves: %d store reads, want 1", op, n, got[n][op])
			}
		}
	}
}

// TestProofsOfALargeTreeReadFewRecords: a proof reads a record per level
// of the tree, but the records of the subtrees of 2^8 leaves and more are
// the same for every proof and are read once: in a tree of 8,192 leaves
// (13 levels), once the proofs of every 256th leaf have been made, an
// inclusion proof reads 8 records and a consistency proof about as few,
// as in a tree of a few hundred leaves; each proof still checks against
// the root.
func TestProofsOfALargeTreeReadFewRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const n, account = 8192, "org_large"
	tr, r := grown(t, account, n)
	root, err := tr.Root(ctx, account, n)
	if err != nil {
		t.Fatal(err)
	}
	prove := func(leaf int64) int64 {
		t.Helper()
		before := r.keys.Load()
		p, err := tr.ProveRecord(ctx, account, n, leaf)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, n, root, leaf, tlog.RecordHash(leafData(leaf+1))); err != nil {
			t.Fatalf("proof of %d: %v", leaf, err)
		}
		return r.keys.Load() - before
	}
	for leaf := int64(0); leaf < n; leaf += 256 {
		prove(leaf)
	}
	for _, leaf := range []int64{1, 777, 4097, 5000, 8191} {
		if got := prove(leaf); got > 8 {
			t.Errorf("inclusion proof of leaf %d in %d: %d records read, want at most 8", leaf, n, got)
		}
	}
	for _, old := range []int64{1000, 4099, 8000} {
		oldRoot, err := tr.Root(ctx, account, old)
		if err != nil {
			t.Fatal(err)
		}
		before := r.keys.Load()
		p, err := tr.ProveTree(ctx, account, n, old)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p, n, root, old, oldRoot); err != nil {
			t.Fatalf("consistency proof from %d: %v", old, err)
		}
		if got := r.keys.Load() - before; got > 2*8 {
			t.Errorf("consistency proof from %d to %d: %d records read, want at most 16", old, n, got)
		}
	}
}

// TestARestartReadsTheEdgeOnce: a tree forgotten (a restart, a partition
// lost) reads its size hint and its right edge (the records of its
// complete subtrees, in one query), then grows without reading.
func TestARestartReadsTheEdgeOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr, r := grown(t, "org_r", 1000)
	tr.Forget()
	before := r.n.Load()
	known := func(seq int64) ([]byte, bool) { return leafData(seq), true }
	if size, err := tr.Extend(ctx, "org_r", 1010, known); err != nil || size != 1010 {
		t.Fatalf("extend after forgetting: got %d %v", size, err)
	}
	if got, want := r.n.Load()-before, int64(2); got != want {
		t.Fatalf("extend after forgetting cost %d store reads, want %d (the hint and the edge)", got, want)
	}
	before = r.n.Load()
	if _, err := tr.Extend(ctx, "org_r", 1020, known); err != nil {
		t.Fatal(err)
	}
	if got := r.n.Load() - before; got != 0 {
		t.Fatalf("extend with the edge known cost %d store reads, want none", got)
	}
	b := tree.NewBuilder()
	for seq := int64(1); seq <= 1020; seq++ {
		if _, err := b.Add(leafData(seq)); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := b.Root()
	if _, root, err := tr.Head(ctx, "org_r", 1020); err != nil || root != want {
		t.Fatalf("root: got %x %v, want %x", root, err, want)
	}
}

// BenchmarkProof times a root, an inclusion proof and a consistency proof
// in trees of 100 and 100,000 leaves and reports their store reads per
// operation (reads/op): one query each, whatever the size. Growing the large tree takes
// a few tens of seconds on the embedded store; make bench runs it.
func BenchmarkProof(b *testing.B) {
	for _, n := range []int64{100, 100_000} {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			ctx := context.Background()
			tr, r := grown(b, "org_b", n)
			root, err := tr.Root(ctx, "org_b", n)
			if err != nil {
				b.Fatal(err)
			}
			ops := []struct {
				name string
				op   func(i int) error
			}{
				{"root", func(int) error { _, err := tr.Root(ctx, "org_b", n); return err }},
				{"inclusion", func(i int) error {
					leaf := int64(i*7919) % n
					p, err := tr.ProveRecord(ctx, "org_b", n, leaf)
					if err != nil {
						return err
					}
					return tlog.CheckRecord(p, n, root, leaf, tlog.RecordHash(leafData(leaf+1)))
				}},
				{"consistency", func(i int) error {
					_, err := tr.ProveTree(ctx, "org_b", n, 1+int64(i*7919)%n)
					return err
				}},
			}
			for _, o := range ops {
				b.Run(o.name, func(b *testing.B) {
					before := r.n.Load()
					i := 0
					for b.Loop() {
						if err := o.op(i); err != nil {
							b.Fatal(err)
						}
						i++
					}
					b.ReportMetric(float64(r.n.Load()-before)/float64(b.N), "reads/op")
				})
			}
		})
	}
}
