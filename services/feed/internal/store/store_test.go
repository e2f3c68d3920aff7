package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

func newStore(t *testing.T) (*mongo.Database, *store.Store) {
	t.Helper()
	db := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	s := store.New(store.Config{DB: db})
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db, s
}

var lastID atomic.Int64

// add stores n new items of account and returns their ids.
func add(t *testing.T, s *store.Store, account string, n int) []string {
	t.Helper()
	var items []activity.Item
	var ids []string
	for range n {
		id := fmt.Sprintf("evt_%s_%d", account, lastID.Add(1))
		items = append(items, activity.Item{ID: id, Type: "opt_out", Summary: "Borrower opted out of SMS", OccurredAt: "2026-04-27T10:00:00.000Z"})
		ids = append(ids, id)
	}
	if _, err := s.Append(context.Background(), account, items); err != nil {
		t.Fatal(err)
	}
	return ids
}

func cursors(items []activity.Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Cursor())
	}
	return out
}

// TestPage: pages newest first follow their cursors with no gap and no
// repeat; a deleted item is left out; a cursor that is not one is
// refused.
func TestPage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, s := newStore(t)
	add(t, s, "org_a", 5)
	follow := func(limit int, cursor string) (pages [][]string, next []string) {
		t.Helper()
		for range 10 {
			p, err := s.Page(ctx, "org_a", limit, cursor)
			if err != nil {
				t.Fatal(err)
			}
			if p.Items == nil {
				t.Fatal("got nil items, want a slice")
			}
			pages = append(pages, cursors(p.Items))
			if p.NextCursor == "" {
				return pages, next
			}
			next = append(next, p.NextCursor)
			cursor = p.NextCursor
		}
		t.Fatal("more than 10 pages")
		return nil, nil
	}
	tests := []struct {
		name   string
		limit  int
		cursor string
		pages  [][]string
		next   []string
	}{
		{"newest first", 2, "", [][]string{{"5", "4"}, {"3", "2"}, {"1"}}, []string{"4", "2"}},
		{"one page", 5, "", [][]string{{"5", "4", "3", "2", "1"}}, nil},
		{"from a cursor", 2, "4", [][]string{{"3", "2"}, {"1"}}, []string{"2"}},
		{"from cursor 1", 2, "1", [][]string{nil}, nil},
		{"from cursor 0", 2, "0", [][]string{nil}, nil},
		{"from past the head", 2, "100", [][]string{{"5", "4"}, {"3", "2"}, {"1"}}, []string{"4", "2"}},
	}
	for _, tt := range tests {
		pages, next := follow(tt.limit, tt.cursor)
		if !slices.EqualFunc(pages, tt.pages, slices.Equal) || !slices.Equal(next, tt.next) {
			t.Errorf("%s: got %v with cursors %v, want %v with %v", tt.name, pages, next, tt.pages, tt.next)
		}
	}
	for _, bad := range []string{"x", "-1", "01", "1.5"} {
		if _, err := s.Page(ctx, "org_a", 2, bad); !errors.Is(err, store.ErrInvalidCursor) {
			t.Errorf("cursor %q: got %v, want ErrInvalidCursor", bad, err)
		}
	}
	if p, err := s.Page(ctx, "org_nobody", 2, ""); err != nil || len(p.Items) != 0 || p.Items == nil || p.NextCursor != "" {
		t.Fatalf("empty feed: got %+v %v", p, err)
	}
	if _, err := db.Collection(store.ItemsCollection).DeleteOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key("org_a", 4)}}); err != nil {
		t.Fatal(err)
	}
	if pages, next := follow(2, ""); !slices.EqualFunc(pages, [][]string{{"5"}, {"3", "2"}, {"1"}}, slices.Equal) || !slices.Equal(next, []string{"4", "2"}) {
		t.Fatalf("with 4 deleted: got %v with cursors %v", pages, next)
	}
}

// sent is what a stream handed out: "h3" for item 3 from history, "l3"
// live.
type sent []string

func (s *sent) send(d store.Delivery) error {
	src := "h"
	if d.Live {
		src = "l"
	}
	if !strings.Contains(string(d.JSON), `"cursor":"`+d.Item.Cursor()+`"`) {
		return fmt.Errorf("item %d sent with JSON %s", d.Item.Seq, d.JSON)
	}
	*s = append(*s, src+d.Item.Cursor())
	return nil
}

// live returns the item of account at seq as the hub delivers it.
func live(t *testing.T, s *store.Store, account string, seq int64) (activity.Item, []byte) {
	t.Helper()
	p, err := s.Page(context.Background(), account, 1, activity.FormatCursor(seq+1))
	if err != nil || len(p.Items) != 1 {
		t.Fatalf("item %d: %+v %v", seq, p, err)
	}
	return p.Items[0], []byte(fmt.Sprintf(`{"cursor":"%d"}`, seq))
}

// TestStream: a stream resumes after its cursor from history, then hands
// out each live item once and in order, filling a gap from the store and
// skipping what it sent already; a cursor past the head is refused.
func TestStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, s := newStore(t)
	add(t, s, "org_s", 5)
	open := func(lastEventID string) (*store.Stream, error) {
		at, err := store.ParsePosition(lastEventID)
		if err != nil {
			return nil, err
		}
		return s.Open(ctx, "org_s", at)
	}

	fromTwo, err := open("2")
	if err != nil {
		t.Fatal(err)
	}
	atHead, err := open("")
	if err != nil {
		t.Fatal(err)
	}
	var a, b sent
	if err := fromTwo.Backlog(ctx, a.send); err != nil {
		t.Fatal(err)
	}
	if err := atHead.Backlog(ctx, b.send); err != nil {
		t.Fatal(err)
	}
	add(t, s, "org_s", 3) // 6, 7, 8
	for _, seq := range []int64{4, 8, 7, 8} {
		it, data := live(t, s, "org_s", seq)
		for _, st := range []struct {
			s    *store.Stream
			sent *sent
		}{{fromTwo, &a}, {atHead, &b}} {
			if err := st.s.Live(ctx, it, data, st.sent.send); err != nil {
				t.Fatal(err)
			}
		}
	}
	if want := (sent{"h3", "h4", "h5", "h6", "h7", "l8"}); !slices.Equal(a, want) {
		t.Errorf("resumed after 2: sent %v, want %v", a, want)
	}
	if want := (sent{"h6", "h7", "l8"}); !slices.Equal(b, want) {
		t.Errorf("opened at the head: sent %v, want %v", b, want)
	}

	var beyond *store.BeyondHeadError
	if _, err := open("9"); !errors.As(err, &beyond) || beyond.Head != 8 {
		t.Errorf("past the head: got %v, want a BeyondHeadError at 8", err)
	}
	if _, err := s.Open(ctx, "org_other", mustPosition(t, "1")); !errors.As(err, &beyond) || beyond.Head != 0 {
		t.Errorf("another account's cursor: got %v, want a BeyondHeadError at 0", err)
	}
	if _, err := open("x"); !errors.Is(err, store.ErrInvalidCursor) {
		t.Errorf("not a cursor: got %v, want ErrInvalidCursor", err)
	}
	for _, at := range []string{"8", "0"} {
		if _, err := open(at); err != nil {
			t.Errorf("at %s: %v", at, err)
		}
	}
}

func mustPosition(t *testing.T, lastEventID string) store.Position {
	t.Helper()
	p, err := store.ParsePosition(lastEventID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStreamBacklog: a long backlog comes in order over several rounds of
// reads; an item missing from the store ends it after the ones before.
func TestStreamBacklog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, s := newStore(t)
	add(t, s, "org_b", 150)
	st, err := s.Open(ctx, "org_b", mustPosition(t, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var got sent
	if err := st.Backlog(ctx, got.send); err != nil {
		t.Fatal(err)
	}
	var want sent
	for seq := 1; seq <= 150; seq++ {
		want = append(want, fmt.Sprintf("h%d", seq))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sent %d items %v…, want 1 to 150 in order", len(got), got[:min(len(got), 5)])
	}

	if _, err := db.Collection(store.ItemsCollection).DeleteOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key("org_b", 100)}}); err != nil {
		t.Fatal(err)
	}
	st, err = s.Open(ctx, "org_b", mustPosition(t, "97"))
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	if err := st.Backlog(ctx, got.send); err == nil || !strings.Contains(err.Error(), "item 100 of org_b is not stored") {
		t.Fatalf("got %v, want item 100 missing", err)
	}
	if want := (sent{"h98", "h99"}); !slices.Equal(got, want) {
		t.Fatalf("sent %v before the missing item, want %v", got, want)
	}
}

// TestOpenAtAKnownHeadReadsNothing: a stream opened at a head the caller
// knows (the hub's) costs no lookup, at the head or resuming from an item
// a stream may have sent; only a position past it is checked against the
// items. Open without it finds the exact head though the hint lags.
func TestOpenAtAKnownHeadReadsNothing(t *testing.T) {
	var finds atomic.Int64
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "find" {
			finds.Add(1)
		}
	}}
	cl := mongotest.MonitoredClient(t, monitor)
	db := cl.Database(mongotest.NewDatabase(t))
	s := store.New(store.Config{DB: db})
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	add(t, s, "acct_a", 3) // fewer than DefaultHintEvery: no hint yet
	st, err := s.Open(ctx, "acct_a", mustPosition(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if st.Head() != 3 {
		t.Fatalf("open with no hint: head %d, want 3", st.Head())
	}
	for _, c := range []struct {
		account, lastEventID string
		head                 int64
	}{{"acct_a", "", 3}, {"acct_a", "2", 3}, {"acct_a", "3", 3}, {"acct_empty", "", 0}} {
		before := finds.Load()
		st, err := s.OpenAt(ctx, c.account, mustPosition(t, c.lastEventID), c.head)
		if err != nil {
			t.Fatal(err)
		}
		if n := finds.Load() - before; n != 0 || st.Head() != c.head {
			t.Errorf("open %s from %q at %d: %d lookups and head %d, want none and %d", c.account, c.lastEventID, c.head, n, st.Head(), c.head)
		}
	}
	var beyond *store.BeyondHeadError
	if _, err := s.OpenAt(ctx, "acct_a", mustPosition(t, "3"), 2); err != nil {
		t.Errorf("open from 3 past a known head 2 that the items pass: %v, want it open", err)
	}
	if _, err := s.OpenAt(ctx, "acct_a", mustPosition(t, "4"), 3); !errors.As(err, &beyond) || beyond.Head != 3 {
		t.Errorf("open from 4 past the head 3: %v, want a BeyondHeadError at 3", err)
	}
}
