package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

var gen = ids.NewGenerator(time.Now)

func newLedger(t *testing.T) (*mongo.Database, *ledger.Ledger) {
	t.Helper()
	db := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	if err := l.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, l
}

// optOuts makes n valid opt_out events of account, as the relay publishes
// them.
func optOuts(t testing.TB, account string, n int) []ledger.Event {
	t.Helper()
	campaign := gen.New(ids.CampaignPrefix)
	var out []ledger.Event
	for i := 0; i < n; i++ {
		f, active := false, true
		e := events.Event{
			EventID: gen.New(ids.EventPrefix), EventType: events.TypeOptOut, AccountID: account,
			DocumentID: "doc_1", CampaignID: campaign, Actor: events.Actor{Type: events.ActorUser, ID: "user_1", SessionID: "sess_1"},
			OccurredAt: events.FormatTime(time.Now()), Channel: "sms", Notes: fmt.Sprintf("request \"%d\" — ok 😀", i),
			Deactivated: &f, Active: &active, ActiveChannels: []string{"email"},
		}
		m, err := events.NewMessage(e, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := events.ValidateData(m.Data); err != nil {
			t.Fatal(err)
		}
		out = append(out, ledger.Event{Event: e, Data: m.Data})
	}
	return out
}

func TestAppendIsOncePerEventInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, l := newLedger(t)
	evs := optOuts(t, "org_a", 10)
	if _, err := l.Append(ctx, "org_a", evs[:6]); err != nil {
		t.Fatal(err)
	}
	// A redelivery of part of the batch with the rest.
	res, err := l.Append(ctx, "org_a", evs[3:])
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Replay != (i < 3) {
			t.Fatalf("result %d: got %+v", i, r)
		}
	}
	v, err := l.Verify(ctx, "org_a")
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.HeadSeq != 10 || v.Entries != 10 || v.HeadHash == "" {
		t.Fatalf("got %+v, want ok with 10 entries", v)
	}
	for i, e := range evs {
		got, found, err := l.Get(ctx, "org_a", int64(i+1))
		if err != nil || !found || got.EventID != e.EventID {
			t.Fatalf("seq %d: got %v %v %v, want %s", i+1, got.EventID, found, err, e.EventID)
		}
		var data map[string]any
		if err := json.Unmarshal(got.Data, &data); err != nil || data["notes"] != e.Notes {
			t.Fatalf("seq %d: data %s", i+1, got.Data)
		}
	}
	empty, err := l.Verify(ctx, "org_nobody")
	if err != nil || !empty.OK || empty.HeadSeq != 0 {
		t.Fatalf("empty log: got %+v %v, want ok with no entries", empty, err)
	}
}

// TestTwoOwnersForAMoment: two consumers append the same partition's
// events at once, as during a rebalance; the chain stays whole.
func TestTwoOwnersForAMoment(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := newLedger(t)
	evs := optOuts(t, "org_2", 40)
	var wg sync.WaitGroup
	for w, batch := range []int{5, 9} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := ledger.New(ledger.Config{DB: db, Now: time.Now})
			for i := 0; i < len(evs); i += batch {
				if _, err := l.Append(ctx, "org_2", evs[i:min(i+batch, len(evs))]); err != nil {
					t.Errorf("writer %d: %v", w, err)
				}
			}
		}()
	}
	wg.Wait()
	v, err := ledger.New(ledger.Config{DB: db, Now: time.Now}).Verify(ctx, "org_2")
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || v.HeadSeq != 40 {
		t.Fatalf("got %+v, want ok with 40 entries", v)
	}
}

// TestTamperingIsDetected edits, deletes and reorders entries directly in
// the database; verify names the first broken seq.
func TestTamperingIsDetected(t *testing.T) {
	t.Parallel()
	entries := func(db *mongo.Database) *mongo.Collection { return db.Collection(auditlog.EntriesCollection) }
	key := func(seq int64) bson.D { return bson.D{{Key: "_id", Value: seqlog.Key("org_t", seq)}} }
	tests := []struct {
		name   string
		tamper func(t *testing.T, c *mongo.Collection)
		want   int64
	}{
		{"edit the notes", func(t *testing.T, c *mongo.Collection) {
			var d auditlog.Doc
			if err := c.FindOne(context.Background(), key(4)).Decode(&d); err != nil {
				t.Fatal(err)
			}
			edited := strings.Replace(d.Data.StringValue(), `"request \"3\"`, `"nothing to see`, 1)
			_, err := c.UpdateOne(context.Background(), key(4), bson.D{{Key: "$set", Value: bson.D{{Key: "data", Value: edited}}}})
			if err != nil {
				t.Fatal(err)
			}
		}, 4},
		{"edit the event type", func(t *testing.T, c *mongo.Collection) {
			_, err := c.UpdateOne(context.Background(), key(2), bson.D{{Key: "$set", Value: bson.D{{Key: "eventType", Value: "campaign_started"}}}})
			if err != nil {
				t.Fatal(err)
			}
		}, 2},
		{"delete one in the middle", func(t *testing.T, c *mongo.Collection) {
			if _, err := c.DeleteOne(context.Background(), key(5)); err != nil {
				t.Fatal(err)
			}
		}, 5},
		{"delete the last", func(t *testing.T, c *mongo.Collection) {
			if _, err := c.DeleteOne(context.Background(), key(8)); err != nil {
				t.Fatal(err)
			}
		}, 8},
		{"delete at a probe point", func(t *testing.T, c *mongo.Collection) {
			if _, err := c.DeleteOne(context.Background(), key(4)); err != nil {
				t.Fatal(err)
			}
		}, 4},
		{"swap two entries", func(t *testing.T, c *mongo.Collection) {
			ctx := context.Background()
			var a, b bson.D
			_ = c.FindOne(ctx, key(3)).Decode(&a)
			_ = c.FindOne(ctx, key(6)).Decode(&b)
			for _, d := range []*bson.D{&a, &b} {
				(*d)[0].Value = "tmp"
			}
			if _, err := c.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: bson.A{seqlog.Key("org_t", 3), seqlog.Key("org_t", 6)}}}}}); err != nil {
				t.Fatal(err)
			}
			a[0].Value, b[0].Value = seqlog.Key("org_t", 6), seqlog.Key("org_t", 3)
			if _, err := c.InsertMany(ctx, []any{a, b}); err != nil {
				t.Fatal(err)
			}
		}, 3},
		// The chain sees the edit at the next link; the tree at the entry.
		{"recompute a hash after an edit", func(t *testing.T, c *mongo.Collection) {
			ctx := context.Background()
			var d auditlog.Doc
			if err := c.FindOne(ctx, key(6)).Decode(&d); err != nil {
				t.Fatal(err)
			}
			e, _ := d.Entry()
			e.Actor.ID = "user_someone_else"
			_ = auditlog.Seal(&e, e.PrevHash)
			nd, _ := auditlog.ToDoc(e, seqlog.Key(e.AccountID, e.Seq))
			if _, err := c.ReplaceOne(ctx, key(6), nd); err != nil {
				t.Fatal(err)
			}
		}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, l := newLedger(t)
			if _, err := l.Append(ctx, "org_t", optOuts(t, "org_t", 8)); err != nil {
				t.Fatal(err)
			}
			if v, err := l.Verify(ctx, "org_t"); err != nil || !v.OK {
				t.Fatalf("before tampering: got %+v %v", v, err)
			}
			tt.tamper(t, entries(db))
			v, err := ledger.New(ledger.Config{DB: db, Now: time.Now}).Verify(ctx, "org_t")
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || v.FirstBrokenSeq == nil || *v.FirstBrokenSeq != tt.want {
				t.Fatalf("got %+v (first broken %v), want broken at %d", v, v.FirstBrokenSeq, tt.want)
			}
			if v.HeadSeq != 8 {
				t.Fatalf("got head %d, want 8: the log reached 8", v.HeadSeq)
			}
		})
	}
}

// TestDataIsStoredAsHashed: an event whose data holds fractional and large
// numbers, objects that look like MongoDB extended JSON and keys beyond
// the BMP is appended, read back byte for byte, and verifies.
func TestDataIsStoredAsHashed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, l := newLedger(t)
	evs := optOuts(t, "org_x", 2)
	const extra = `,"rate":0.1,"limit":1e21,"tiny":5e-7,"count":{"$numberLong":"5"},"at":{"$date":"2026-04-27T10:00:00Z"},"ref":{"$oid":"65f0c0ffee0000000000beef"},"\ud83d\ude00 clé":"ü"}`
	evs[1].Data = append(evs[1].Data[:len(evs[1].Data)-1:len(evs[1].Data)-1], extra...)
	if err := events.ValidateData(evs[1].Data); err != nil {
		t.Fatalf("the event must be schema-valid: %v", err)
	}
	if _, err := l.Append(ctx, "org_x", evs); err != nil {
		t.Fatal(err)
	}
	e, found, err := ledger.New(ledger.Config{DB: db, Now: time.Now}).Get(ctx, "org_x", 2)
	if err != nil || !found {
		t.Fatalf("get: %v %v", found, err)
	}
	if string(e.Data) != string(evs[1].Data) {
		t.Fatalf("data read back\n got %s\nwant %s", e.Data, evs[1].Data)
	}
	v, err := l.Verify(ctx, "org_x")
	if err != nil || !v.OK || v.HeadSeq != 2 {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// clock is a time the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestVerifyReusesARecentResult: a verify repeated while the log has not
// grown reuses the last result for up to a minute, at the cost of finding
// the head; one after an append sees the new entry; an edit made directly
// in the database is caught once the minute has passed.
func TestVerifyReusesARecentResult(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var reads atomic.Int64
	cl, err := mongo.Connect(options.Client().ApplyURI(mongotest.URI(t)).SetMonitor(&event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			if e.CommandName == "find" || e.CommandName == "getMore" {
				reads.Add(1)
			}
		}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	db := cl.Database(mongotest.NewDatabase(t))
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	l := ledger.New(ledger.Config{DB: db, Now: clk.now})
	if err := l.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, "org_v", optOuts(t, "org_v", 40)); err != nil {
		t.Fatal(err)
	}
	verify := func(what string) (auditlog.Result, int64) {
		t.Helper()
		before := reads.Load()
		v, err := l.Verify(ctx, "org_v")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v, reads.Load() - before
	}

	first, full := verify("first verify")
	if !first.OK || first.HeadSeq != 40 {
		t.Fatalf("first verify: got %+v, want ok at 40", first)
	}
	clk.advance(30 * time.Second)
	again, cost := verify("second verify")
	if again.OK != first.OK || again.HeadSeq != first.HeadSeq || again.HeadHash != first.HeadHash {
		t.Fatalf("second verify: got %+v, want %+v", again, first)
	}
	if cost > 4 {
		t.Fatalf("second verify within the minute cost %d store reads, want at most 4 (the first cost %d)", cost, full)
	}

	if _, err := l.Append(ctx, "org_v", optOuts(t, "org_v", 1)); err != nil {
		t.Fatal(err)
	}
	grown, _ := verify("verify after an append")
	if !grown.OK || grown.HeadSeq != 41 || grown.Entries != 41 || grown.HeadHash == first.HeadHash {
		t.Fatalf("verify after an append: got %+v, want ok at 41", grown)
	}

	if _, err := db.Collection(auditlog.EntriesCollection).UpdateOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key("org_v", 3)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "eventType", Value: "campaign_started"}}}}); err != nil {
		t.Fatal(err)
	}
	clk.advance(61 * time.Second)
	caught, _ := verify("verify after an edit")
	if caught.OK || caught.FirstBrokenSeq == nil || *caught.FirstBrokenSeq != 3 {
		t.Fatalf("verify a minute after an edit: got %+v, want broken at 3", caught)
	}
	// A broken chain is not reused: the next verify looks again.
	if _, cost := verify("verify of a broken chain"); cost <= 4 {
		t.Fatalf("verify of a broken chain cost %d store reads, want a full recomputation", cost)
	}
}

// TestConcurrentVerifiesShareOneComputation: verifies of one account at
// once read the log once between them.
func TestConcurrentVerifiesShareOneComputation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var reads atomic.Int64
	cl, err := mongo.Connect(options.Client().ApplyURI(mongotest.URI(t)).SetMonitor(&event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			if e.CommandName == "find" {
				reads.Add(1)
			}
		}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	db := cl.Database(mongotest.NewDatabase(t))
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	if _, err := l.Append(ctx, "org_cv", optOuts(t, "org_cv", 60)); err != nil {
		t.Fatal(err)
	}
	before := reads.Load()
	const callers = 8
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := l.Verify(ctx, "org_cv"); err != nil || !v.OK || v.HeadSeq != 60 {
				t.Errorf("got %+v %v, want ok at 60", v, err)
			}
		}()
	}
	wg.Wait()
	// Each caller finds the head (a few reads); the 60 entries and their
	// 60 tree records are read once, not once per caller, and the root
	// costs a read per complete subtree (4 for 60 leaves).
	if got, limit := reads.Load()-before, int64(2*60+4+callers*4); got > limit {
		t.Fatalf("%d concurrent verifies cost %d store reads, want at most %d", callers, got, limit)
	}
}
