package seqlog_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// TestTwoWritersOfManyAccountsHintEach has two writers, as two instances
// owning different partitions, append fetches spread over many accounts
// at the same time, and wants every account's head hinted, promptly.
func TestTwoWritersOfManyAccountsHintEach(t *testing.T) {
	_, mk := newLog(t)
	const writers, accounts, rounds = 2, 90, 4
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var all []seqlog.Batch
	errs := make(chan error, writers)
	for w := range writers {
		l := mk()
		var mine [][]seqlog.Batch
		for r := range rounds {
			var batches []seqlog.Batch
			for a := range accounts {
				account := fmt.Sprintf("acct_%d_%03d", w, a)
				batches = append(batches, seqlog.Batch{Account: account, Items: items(account, fmt.Sprintf("e%d_%s", r, account))})
			}
			mine = append(mine, batches)
		}
		all = append(all, mine[0]...)
		go func() {
			for _, batches := range mine {
				if _, err := l.AppendBatches(ctx, batches); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("the writers took more than 30 s: %v", ctx.Err())
	}
	for _, b := range all {
		h, err := mk().HeadHint(context.Background(), b.Account)
		if err != nil {
			t.Fatal(err)
		}
		if h.Seq != rounds {
			t.Fatalf("hint of %s: seq %d, want %d", b.Account, h.Seq, rounds)
		}
	}
}

// TestHintEveryAndFindHead: with HintEvery 4, appends of one document
// each hint the head only at 4 and 8, and FindHead finds the exact head
// (seq and link) after every append, from a fresh log with no cache; a
// hint past the end is survived.
func TestHintEveryAndFindHead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := newLog(t)
	var updates atomic.Int64
	mk := func() *seqlog.Log {
		return seqlog.New(seqlog.Config{Docs: db.Collection("docs"), Heads: countingUpdates(t, db, "heads", &updates), LinkField: "link", HintEvery: 4})
	}
	writer := mk()
	const account = "acct_h"
	for n := 1; n <= 10; n++ {
		if _, err := writer.AppendBatches(ctx, []seqlog.Batch{{Account: account, Items: items(account, fmt.Sprintf("e%d", n))}}); err != nil {
			t.Fatal(err)
		}
		h, err := mk().FindHead(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		want, err := mk().LoadHead(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		if h.Seq != int64(n) || h != want {
			t.Fatalf("after %d appends: FindHead %+v, want seq %d and LoadHead's %+v", n, h, n, want)
		}
	}
	if got := updates.Load(); got != 2 {
		t.Errorf("10 appends of one document with HintEvery 4: %d hint updates, want 2 (at 4 and 8)", got)
	}
	if h, err := mk().HeadHint(ctx, account); err != nil || h.Seq != 8 {
		t.Errorf("hint: %+v, %v; want seq 8", h, err)
	}
	if _, err := db.Collection("heads").UpdateOne(ctx, bson.D{{Key: "_id", Value: account}}, bson.D{{Key: "$set", Value: bson.D{{Key: "seq", Value: 40}}}}); err != nil {
		t.Fatal(err)
	}
	if h, err := mk().FindHead(ctx, account); err != nil || h.Seq != 10 {
		t.Errorf("hint past the end: FindHead %+v, %v; want seq 10", h, err)
	}
	if h, err := mk().FindHead(ctx, "acct_none"); err != nil || h.Seq != 0 {
		t.Errorf("empty account: FindHead %+v, %v; want seq 0", h, err)
	}
}

// countingUpdates returns collection name of db on a client of its own
// whose update commands are counted in n.
func countingUpdates(t *testing.T, db *mongo.Database, name string, n *atomic.Int64) *mongo.Collection {
	t.Helper()
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "update" {
			n.Add(1)
		}
	}}
	cl := mongotest.MonitoredClient(t, monitor)
	return cl.Database(db.Name()).Collection(name)
}

// TestAFetchOfAccountsNewToTheProcessFindsTheirHeadsTogether: a writer
// that holds no head of the accounts of a fetch (they are new, or new to
// it) finds them all in a find of their hints and one of their hinted
// documents and the next, whatever their number, not in a few lookups
// each; the heads are then the ones each account's documents show.
func TestAFetchOfAccountsNewToTheProcessFindsTheirHeadsTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, mk, finds := findCounted(t)
	const n = 20
	for round, name := range []string{"new accounts", "accounts new to the writer"} {
		finds.Store(0)
		if _, err := mk().AppendBatches(ctx, oneEach("acct_new", n, round)); err != nil {
			t.Fatal(err)
		}
		if got := finds.Load(); got > 2 {
			t.Errorf("a fetch of %d %s: %d finds, want at most 2", n, name, got)
		}
	}
	for a := range n {
		account := fmt.Sprintf("acct_new_%02d", a)
		if ids := readAll(t, mk(), account); len(ids) != 2 {
			t.Fatalf("%s holds %v, want two documents", account, ids)
		}
	}
}

// TestFindHeadsIsFindHead: FindHeads finds every account's head (seq and
// link) as FindHead and LoadHead do, whatever the hint says: none, one
// that lags by up to three documents (HintEvery 4), one that lags by
// many, one past the end, and an account with no documents.
func TestFindHeadsIsFindHead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := newLog(t)
	mk := func() *seqlog.Log {
		return seqlog.New(seqlog.Config{Docs: db.Collection("docs"), Heads: db.Collection("heads"), LinkField: "link", HintEvery: 4})
	}
	writer := mk()
	var accounts []string
	for n := range 11 {
		account := fmt.Sprintf("acct_fh_%02d", n)
		accounts = append(accounts, account)
		for i := range n {
			if _, err := writer.AppendBatches(ctx, []seqlog.Batch{{Account: account, Items: items(account, fmt.Sprintf("e%d_%d", n, i))}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// No hint at all, a hint far behind, and one past the end.
	hints := db.Collection("heads")
	if _, err := hints.DeleteOne(ctx, bson.D{{Key: "_id", Value: accounts[10]}}); err != nil {
		t.Fatal(err)
	}
	for account, seq := range map[string]int64{accounts[9]: 1, accounts[7]: 40} {
		if _, err := hints.UpdateOne(ctx, bson.D{{Key: "_id", Value: account}}, bson.D{{Key: "$set", Value: bson.D{{Key: "seq", Value: seq}}}}); err != nil {
			t.Fatal(err)
		}
	}
	long := "acct_fh_long"
	var ids []string
	for i := range 150 {
		ids = append(ids, fmt.Sprintf("l%d", i))
	}
	if _, err := mk().Append(ctx, long, items(long, ids...)); err != nil {
		t.Fatal(err)
	}
	if _, err := hints.UpdateOne(ctx, bson.D{{Key: "_id", Value: long}}, bson.D{{Key: "$set", Value: bson.D{{Key: "seq", Value: 3}}}}); err != nil {
		t.Fatal(err)
	}
	accounts = append(accounts, long, "acct_fh_none")
	got, err := mk().FindHeads(ctx, accounts)
	if err != nil {
		t.Fatal(err)
	}
	for i, account := range accounts {
		one, err := mk().FindHead(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		load, err := mk().LoadHead(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		if got[i] != one || got[i] != load {
			t.Errorf("%s: FindHeads %+v, FindHead %+v, LoadHead %+v", account, got[i], one, load)
		}
	}
	if got[len(got)-2].Seq != 150 || got[len(got)-1].Seq != 0 {
		t.Errorf("heads %+v and %+v, want seq 150 and 0", got[len(got)-2], got[len(got)-1])
	}
}

// TestNewAccountsCostOneFind: with every head hinted (HintEvery 1), a
// fetch of accounts new to the log costs one find (their hints), not a
// look at their documents too; an account whose documents are there but
// whose hint is not (a crash between the two) still gets its new
// documents after the ones it holds, with no gap and none twice.
func TestNewAccountsCostOneFind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, mk, finds := findCounted(t)
	const n = 12
	finds.Store(0)
	if _, err := mk().AppendBatches(ctx, oneEach("acct_one", n, 0)); err != nil {
		t.Fatal(err)
	}
	if got := finds.Load(); got != 1 {
		t.Errorf("a fetch of %d new accounts: %d finds, want 1", n, got)
	}
	// A crash between the documents and the hint of one account.
	if _, err := db.Collection("heads").DeleteOne(ctx, bson.D{{Key: "_id", Value: "acct_one_05"}}); err != nil {
		t.Fatal(err)
	}
	res, err := mk().AppendBatches(ctx, oneEach("acct_one", n, 1))
	if err != nil {
		t.Fatal(err)
	}
	for a := range n {
		account := fmt.Sprintf("acct_one_%02d", a)
		if res[a][0].Seq != 2 || res[a][0].Replay {
			t.Errorf("%s: %+v, want appended at seq 2", account, res[a][0])
		}
		want := []string{fmt.Sprintf("e0_%d", a), fmt.Sprintf("e1_%d", a)}
		if got := readAll(t, mk(), account); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s holds %v, want %v", account, got, want)
		}
	}
	if h, err := mk().HeadHint(ctx, "acct_one_05"); err != nil || h.Seq != 2 {
		t.Errorf("hint of the account that lost it: %+v %v, want seq 2", h, err)
	}
}

// findCounted returns a fresh database, its log as processes see it (mk
// makes one on a client whose finds are counted), and the count.
func findCounted(t *testing.T) (db *mongo.Database, mk func() *seqlog.Log, finds *atomic.Int64) {
	t.Helper()
	finds = &atomic.Int64{}
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "find" {
			finds.Add(1)
		}
	}}
	db = mongotest.MonitoredClient(t, monitor).Database(mongotest.NewDatabase(t))
	mk = func() *seqlog.Log {
		return seqlog.New(seqlog.Config{Docs: db.Collection("docs"), Heads: db.Collection("heads"), LinkField: "link"})
	}
	if err := mk().EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, mk, finds
}

// oneEach is a fetch of one item for each of n accounts named prefix_00…,
// the items of round round.
func oneEach(prefix string, n, round int) []seqlog.Batch {
	var bs []seqlog.Batch
	for a := range n {
		account := fmt.Sprintf("%s_%02d", prefix, a)
		bs = append(bs, seqlog.Batch{Account: account, Items: items(account, fmt.Sprintf("e%d_%d", round, a))})
	}
	return bs
}
