package seqlog_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

func TestMain(m *testing.M) {
	code := mongotest.Main(m)
	writeFigures()
	os.Exit(code)
}

type doc struct {
	ID      string `bson:"_id"`
	Account string `bson:"accountId"`
	Seq     int64  `bson:"seq"`
	EventID string `bson:"eventId"`
	Prev    string `bson:"prev"`
	Link    string `bson:"link"`
}

func newLog(t *testing.T) (*mongo.Database, func() *seqlog.Log) {
	t.Helper()
	db := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	mk := func() *seqlog.Log {
		return seqlog.New(seqlog.Config{Docs: db.Collection("docs"), Heads: db.Collection("heads"), LinkField: "link"})
	}
	if err := mk().EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, mk
}

func items(account string, ids ...string) []seqlog.Item {
	var out []seqlog.Item
	for _, id := range ids {
		out = append(out, seqlog.Item{EventID: id, Build: func(seq int64, prev string) (any, string, error) {
			link := fmt.Sprintf("%s<%s", id, prev)
			return doc{ID: seqlog.Key(account, seq), Account: account, Seq: seq, EventID: id, Prev: prev, Link: link}, link, nil
		}})
	}
	return out
}

// readAll walks the account's sequence by _id and checks it is dense and
// linked.
func readAll(t *testing.T, l *seqlog.Log, account string) []string {
	t.Helper()
	var ids []string
	prev := ""
	for seq := int64(1); ; seq++ {
		var d doc
		found, err := l.Get(context.Background(), account, seq, &d)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			return ids
		}
		if d.Seq != seq || d.Prev != prev {
			t.Fatalf("seq %d: got %+v, want seq %d after link %q", seq, d, seq, prev)
		}
		prev = d.Link
		ids = append(ids, d.EventID)
	}
}

func TestAppendAndReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, mk := newLog(t)
	l := mk()
	res, err := l.Append(ctx, "org_a", items("org_a", "e1", "e2", "e3"))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Replay || r.Seq != int64(i+1) {
			t.Fatalf("result %d: got %+v, want seq %d", i, r, i+1)
		}
	}
	// A replay of the whole batch plus a new event, through a fresh
	// process that knows nothing yet.
	l2 := mk()
	res, err = l2.Append(ctx, "org_a", items("org_a", "e2", "e3", "e4", "e1"))
	if err != nil {
		t.Fatal(err)
	}
	want := []seqlog.Result{{EventID: "e2", Seq: 2, Replay: true}, {EventID: "e3", Seq: 3, Replay: true}, {EventID: "e4", Seq: 4}, {EventID: "e1", Seq: 1, Replay: true}}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("result %d: got %+v, want %+v", i, res[i], want[i])
		}
	}
	if got := readAll(t, l, "org_a"); fmt.Sprint(got) != "[e1 e2 e3 e4]" {
		t.Fatalf("got %v", got)
	}
	// Other accounts are separate sequences.
	if _, err := l.Append(ctx, "org_b", items("org_b", "e9")); err != nil {
		t.Fatal(err)
	}
	if h, err := mk().LoadHead(ctx, "org_b"); err != nil || h.Seq != 1 || h.Link != "e9<" {
		t.Fatalf("got head %+v %v, want seq 1", h, err)
	}
}

func TestLoadHeadWithoutHint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, mk := newLog(t)
	l := mk()
	var ids []string
	for i := 0; i < 37; i++ {
		ids = append(ids, fmt.Sprintf("e%d", i))
	}
	if _, err := l.Append(ctx, "org_h", items("org_h", ids...)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection("heads").DeleteMany(ctx, bson.D{}); err != nil {
		t.Fatal(err)
	}
	h, err := mk().LoadHead(ctx, "org_h")
	if err != nil {
		t.Fatal(err)
	}
	if h.Seq != 37 || h.Link == "" {
		t.Fatalf("got head %+v, want seq 37 with its link", h)
	}
	hint, err := l.HeadHint(ctx, "org_h")
	if err != nil || hint.Seq != 0 {
		t.Fatalf("got hint %+v %v, want none", hint, err)
	}
}

// TestTwoWritersOneStream: two processes own the same partition for a
// while and append the same stream of events concurrently, each in its own
// batches; the sequence still holds each event once, densely linked.
func TestTwoWritersOneStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, mk := newLog(t)
	var stream []string
	for i := 0; i < 60; i++ {
		stream = append(stream, fmt.Sprintf("e%02d", i))
	}
	var wg sync.WaitGroup
	for w, batch := range []int{7, 11} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := mk()
			for i := 0; i < len(stream); i += batch {
				if _, err := l.Append(ctx, "org_2w", items("org_2w", stream[i:min(i+batch, len(stream))]...)); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := readAll(t, mk(), "org_2w")
	if fmt.Sprint(got) != fmt.Sprint(stream) {
		t.Fatalf("got %v\nwant %v", got, stream)
	}
}

// TestReplayInTheMiddleOfABatch: fresh events before a replayed one in the
// same batch are reported as appended, not as replays.
func TestReplayInTheMiddleOfABatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, mk := newLog(t)
	l := mk()
	if _, err := l.Append(ctx, "org_m", items("org_m", "a", "b")); err != nil {
		t.Fatal(err)
	}
	res, err := l.Append(ctx, "org_m", items("org_m", "c", "d", "a", "e"))
	if err != nil {
		t.Fatal(err)
	}
	want := []seqlog.Result{{EventID: "c", Seq: 3}, {EventID: "d", Seq: 4}, {EventID: "a", Seq: 1, Replay: true}, {EventID: "e", Seq: 5}}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("result %d: got %+v, want %+v", i, res[i], want[i])
		}
	}
	if got := readAll(t, l, "org_m"); fmt.Sprint(got) != "[a b c d e]" {
		t.Fatalf("got %v", got)
	}
	if h, err := mk().LoadHead(ctx, "org_m"); err != nil || h.Seq != 5 {
		t.Fatalf("got head %+v %v", h, err)
	}
}

// TestRange reads positions both ways, in order, a missing one among them
// and past the end.
func TestRange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, mk := newLog(t)
	l := mk()
	if _, err := l.Append(ctx, "org_r", items("org_r", "a", "b", "c", "d")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection("docs").DeleteOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key("org_r", 2)}}); err != nil {
		t.Fatal(err)
	}
	show := func(slots []seqlog.Slot[doc]) string {
		var out []string
		for _, s := range slots {
			id := "-"
			if s.Found {
				id = s.Doc.EventID
			}
			out = append(out, fmt.Sprintf("%d:%s", s.Seq, id))
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		from, step int64
		n          int
		want       string
	}{
		{1, 1, 5, "1:a 2:- 3:c 4:d 5:-"},
		{4, -1, 4, "4:d 3:c 2:- 1:a"},
		{3, 1, 0, ""},
	} {
		slots, err := seqlog.Range[doc](ctx, l, "org_r", tc.from, tc.step, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if got := show(slots); got != tc.want {
			t.Errorf("Range(%d, %d, %d): got %q, want %q", tc.from, tc.step, tc.n, got, tc.want)
		}
	}
}

// TestRangeOverManyFinds reads more positions than one find asks for,
// both ways, with documents missing on either side of a find's bounds
// and another account's documents beside them: each position holds its
// own document, in order.
func TestRangeOverManyFinds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, mk := newLog(t)
	l := mk()
	const n = 700
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("e%d", i+1)
	}
	for _, account := range []string{"org_many", "org_other"} {
		if _, err := l.Append(ctx, account, items(account, ids...)); err != nil {
			t.Fatal(err)
		}
	}
	missing := map[int64]bool{1: true, 256: true, 257: true, 512: true, 513: true, 700: true}
	for seq := range missing {
		if _, err := db.Collection("docs").DeleteOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key("org_many", seq)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []int64{1, -1} {
		from := int64(1)
		if step < 0 {
			from = n + 5
		}
		slots, err := seqlog.Range[doc](ctx, l, "org_many", from, step, n+5)
		if err != nil {
			t.Fatal(err)
		}
		if len(slots) != n+5 {
			t.Fatalf("step %d: %d slots", step, len(slots))
		}
		for i, s := range slots {
			seq := from + int64(i)*step
			want := seq >= 1 && seq <= n && !missing[seq]
			if s.Seq != seq || s.Found != want || (want && s.Doc.EventID != fmt.Sprintf("e%d", seq)) {
				t.Fatalf("step %d, slot %d: %+v, want seq %d found %v", step, i, s, seq, want)
			}
		}
	}
}
