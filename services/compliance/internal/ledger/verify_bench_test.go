package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/logseed"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/rcm-platform/rcm/services/compliance/internal/tree"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/mod/sumdb/tlog"
)

// seedLog fills a fresh database with n entries of account and their tree
// records, in the service's layout (logseed), and returns a client on it
// whose store commands counts counts.
func seedLog(tb testing.TB, account string, n int, counts *storeCommands) *mongo.Database {
	tb.Helper()
	ctx := context.Background()
	name := mongotest.NewDatabase(tb)
	w := logseed.NewWriter(mongotest.Client(tb).Database(name))
	c := logseed.NewChain(account)
	at := events.FormatTime(time.Now())
	for _, e := range optOuts(tb, account, n) {
		if err := w.Add(ctx, c, e.Event, e.Data, at); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		tb.Fatal(err)
	}
	cl := mongotest.MonitoredClient(tb, counts.monitor())
	return cl.Database(name)
}

// BenchmarkVerify verifies a seeded account cold (a new ledger each time:
// nothing cached), chain, leaves and stored tree; it reports entries/s and
// the store commands per entry verified.
func BenchmarkVerify(b *testing.B) {
	for _, n := range []int{1000, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			const account = "org_verify"
			counts := &storeCommands{}
			db := seedLog(b, account, n, counts)
			before := counts.entries.Load() + counts.tree.Load()
			start := time.Now()
			for b.Loop() {
				l := ledger.New(ledger.Config{DB: db, Now: time.Now})
				v, err := l.Verify(context.Background(), account)
				if err != nil || !v.OK || v.Entries != int64(n) || v.TreeSize != int64(n) {
					b.Fatalf("verify: %+v %v", v, err)
				}
			}
			total := float64(b.N * n)
			b.ReportMetric(total/time.Since(start).Seconds(), "entries/s")
			b.ReportMetric(float64(counts.entries.Load()+counts.tree.Load()-before)/total, "commands/entry")
		})
	}
}

// TestVerifyReadsInBatches: a cold verify reads the entries and the tree
// records a few hundred at a time, not one lookup per entry: 1,000
// entries cost fewer than one store command per 40 entries, all told
// (head, tree edge and root included), and still verify every one.
func TestVerifyReadsInBatches(t *testing.T) {
	t.Parallel()
	const account, n = "org_verify", 1000
	counts := &storeCommands{}
	db := seedLog(t, account, n, counts)
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	before := counts.entries.Load() + counts.tree.Load()
	v, err := l.Verify(context.Background(), account)
	if err != nil || !v.OK || v.Entries != n || v.TreeSize != n {
		t.Fatalf("verify: %+v %v", v, err)
	}
	cmds := counts.entries.Load() + counts.tree.Load() - before
	t.Logf("verify of %d entries: %d store commands", n, cmds)
	if cmds >= n/40 {
		t.Fatalf("verify of %d entries cost %d store commands, want fewer than %d", n, cmds, n/40)
	}
}

// TestVerifyFindsWhatBreaksPastTheFirstWindow: verify reads the log a
// window at a time; an edit, a missing entry and an edited or missing
// tree record in a later window are each reported where they are.
func TestVerifyFindsWhatBreaksPastTheFirstWindow(t *testing.T) {
	t.Parallel()
	const account, n = "org_far", 1300
	entry := func(seq int64) bson.D { return bson.D{{Key: "_id", Value: seqlog.Key(account, seq)}} }
	record := func(leaf int64) bson.D {
		return bson.D{{Key: "_id", Value: tree.Key(account, tlog.StoredHashIndex(0, leaf))}}
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, db *mongo.Database)
		want   int64
		reason string
	}{
		{"an entry edited", func(t *testing.T, db *mongo.Database) {
			if _, err := db.Collection(auditlog.EntriesCollection).UpdateOne(context.Background(), entry(1200),
				bson.D{{Key: "$set", Value: bson.D{{Key: "eventType", Value: "campaign_started"}}}}); err != nil {
				t.Fatal(err)
			}
		}, 1200, "does not match its hash"},
		{"an entry deleted", func(t *testing.T, db *mongo.Database) {
			if _, err := db.Collection(auditlog.EntriesCollection).DeleteOne(context.Background(), entry(1030)); err != nil {
				t.Fatal(err)
			}
		}, 1030, "seq 1030 is missing"},
		{"an interior hash edited", func(t *testing.T, db *mongo.Database) {
			editRecord(t, db, record(1279), 8) // the subtree of leaves 1024 to 1279
		}, 1280, "hashes over entries up to 1280"},
		{"a record deleted", func(t *testing.T, db *mongo.Database) {
			if _, err := db.Collection(tree.HashesCollection).DeleteOne(context.Background(), record(1100)); err != nil {
				t.Fatal(err)
			}
		}, 1101, "entry 1101 is not in the stored tree"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := seedLog(t, account, n, &storeCommands{})
			tt.tamper(t, db)
			v, err := ledger.New(ledger.Config{DB: db, Now: time.Now}).Verify(context.Background(), account)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || v.FirstBrokenSeq == nil || *v.FirstBrokenSeq != tt.want || !strings.Contains(v.Reason, tt.reason) {
				t.Fatalf("got %+v (first broken %v), want broken at %d because %q", v, v.FirstBrokenSeq, tt.want, tt.reason)
			}
			if v.HeadSeq != n || v.TreeSize != n {
				t.Fatalf("got head %d and tree %d, want %d and %d", v.HeadSeq, v.TreeSize, n, n)
			}
		})
	}
}
