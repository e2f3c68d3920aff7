package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/logseed"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/rcm-platform/rcm/services/compliance/internal/tree"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/mod/sumdb/tlog"
)

// The benchmarks fill the compliance database with logseed's documents
// instead of appending through the service; these tests keep that layout
// the service's own.

// all returns every document of coll, by _id.
func all(t *testing.T, coll *mongo.Collection) []bson.Raw {
	t.Helper()
	cur, err := coll.Find(context.Background(), bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var out []bson.Raw
	if err := cur.All(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSeededLogIsTheServicesOwn: the same events appended by the ledger
// (in batches of several sizes) and seeded by logseed make the same
// documents, byte for byte, in every collection of the log: entries,
// tree records, head hints and tree size hints.
func TestSeededLogIsTheServicesOwn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	at := time.Date(2026, 4, 27, 10, 0, 0, 0, time.UTC)
	served := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	l := ledger.New(ledger.Config{DB: served, Now: func() time.Time { return at }})
	if err := l.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	accounts := map[string][]ledger.Event{"org_s1": optOuts(t, "org_s1", 37), "org_s2": optOuts(t, "org_s2", 5)}
	for account, evs := range accounts {
		for from := 0; from < len(evs); {
			n := min(len(evs)-from, 1+from%7)
			if _, err := l.Append(ctx, account, evs[from:from+n]); err != nil {
				t.Fatal(err)
			}
			from += n
		}
	}

	seeded := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	w := logseed.NewWriter(seeded)
	w.Batch = 10
	for account, evs := range accounts {
		c := logseed.NewChain(account)
		for _, e := range evs {
			if err := w.Add(ctx, c, e.Event, e.Data, events.FormatTime(at)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, coll := range []string{logseed.EntriesCollection, logseed.HashesCollection, logseed.HeadsCollection} {
		want, got := all(t, served.Collection(coll)), all(t, seeded.Collection(coll))
		if len(got) != len(want) || len(got) == 0 {
			t.Fatalf("%s: %d documents seeded, the service wrote %d", coll, len(got), len(want))
		}
		for i := range want {
			if !bytesEqual(got[i], want[i]) {
				t.Fatalf("%s: seeded\n%s\nthe service wrote\n%s", coll, got[i], want[i])
			}
		}
	}
	if logseed.EntriesCollection != auditlog.EntriesCollection || logseed.HashesCollection != tree.HashesCollection ||
		logseed.HeadsCollection != auditlog.HeadsCollection {
		t.Fatal("logseed's collections are not the service's")
	}
	// The size hints are in the heads' documents: the collection they
	// were kept in before is only read.
	if old := all(t, served.Collection(tree.SizesCollection)); len(old) != 0 {
		t.Fatalf("the service wrote %d documents to %s", len(old), tree.SizesCollection)
	}
}

func bytesEqual(a, b bson.Raw) bool { return string(a) == string(b) }

// TestTheServiceVerifiesAndProvesASeededLog: a log seeded by logseed is
// one the service goes on with: it verifies, its tree head is logseed's
// root, proofs check against it, and an append grows it.
func TestTheServiceVerifiesAndProvesASeededLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	const account, n = "org_seeded", 300
	evs := optOuts(t, account, n+3)
	w := logseed.NewWriter(db)
	c := logseed.NewChain(account)
	for _, e := range evs[:n] {
		if err := w.Add(ctx, c, e.Event, e.Data, events.FormatTime(time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	want, err := c.Root()
	if err != nil {
		t.Fatal(err)
	}
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	if err := l.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := l.Verify(ctx, account)
	if err != nil || !v.OK || v.Entries != n || v.TreeSize != n {
		t.Fatalf("verify the seeded log: %+v %v", v, err)
	}
	size, root, err := l.TreeHead(ctx, account)
	if err != nil || size != n || root != want {
		t.Fatalf("tree head: got %d %x %v, want %d %x", size, root, err, n, want)
	}
	leaf, found, err := l.LeafData(ctx, account, 123)
	if err != nil || !found {
		t.Fatal(found, err)
	}
	p, err := l.ProveRecord(ctx, account, n, 122)
	if err != nil || tlog.CheckRecord(p, n, root, 122, tlog.RecordHash(leaf)) != nil {
		t.Fatalf("inclusion proof of 123: %v", err)
	}
	if _, err := l.Append(ctx, account, evs[n:]); err != nil {
		t.Fatal(err)
	}
	old := root
	if ok, err := l.Consistent(ctx, account, n, old); err != nil || !ok {
		t.Fatalf("consistent with the seeded tree after an append: %v %v", ok, err)
	}
	if v, err := l.Verify(ctx, account); err != nil || !v.OK || v.TreeSize != n+3 {
		t.Fatalf("verify after an append: %+v %v", v, err)
	}
}
