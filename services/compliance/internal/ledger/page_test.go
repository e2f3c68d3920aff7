package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// onDocuments returns evs with the document of event i set to docs(i).
func onDocuments(t *testing.T, evs []ledger.Event, docs func(i int) string) []ledger.Event {
	t.Helper()
	for i := range evs {
		evs[i].DocumentID = docs(i)
		m, err := events.NewMessage(evs[i].Event, "")
		if err != nil {
			t.Fatal(err)
		}
		evs[i].Data = m.Data
	}
	return evs
}

// seqs returns the seqs of a page's entries.
func seqs(p ledger.Page) []int64 {
	var out []int64
	for _, e := range p.Entries {
		out = append(out, e.Seq)
	}
	return out
}

// pages reads every page of q, following the cursors, and returns the
// seqs of each page and the cursors that led on.
func pages(t *testing.T, l *ledger.Ledger, account string, q ledger.Query) (got [][]int64, cursors []string) {
	t.Helper()
	for range 100 {
		p, err := l.Page(context.Background(), account, q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, seqs(p))
		if p.NextCursor == "" {
			return got, cursors
		}
		cursors = append(cursors, p.NextCursor)
		q.Cursor = p.NextCursor
	}
	t.Fatal("more than 100 pages")
	return nil, nil
}

// TestPage: pages newest or oldest first follow their cursors with no
// gap and no repeat, filters match, a deleted entry is left out, and a
// cursor the ledger did not return is refused.
func TestPage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, l := newLedger(t)
	// Seqs 1..8; the even ones are on doc_2.
	evs := onDocuments(t, optOuts(t, "org_p", 8), func(i int) string { return fmt.Sprintf("doc_%d", 1+i%2) })
	if _, err := l.Append(ctx, "org_p", evs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		q       ledger.Query
		want    [][]int64
		cursors []string
	}{
		{"newest first", ledger.Query{Limit: 3}, [][]int64{{8, 7, 6}, {5, 4, 3}, {2, 1}}, []string{"6", "3"}},
		{"oldest first", ledger.Query{Limit: 5, Ascending: true}, [][]int64{{1, 2, 3, 4, 5}, {6, 7, 8}}, []string{"5"}},
		{"a page that ends at the last", ledger.Query{Limit: 4}, [][]int64{{8, 7, 6, 5}, {4, 3, 2, 1}}, []string{"5"}},
		{"by document", ledger.Query{Limit: 3, DocumentID: "doc_2"}, [][]int64{{8, 6, 4}, {2}}, []string{"4"}},
		{"by campaign and type", ledger.Query{Limit: 10, CampaignID: evs[0].CampaignID, EventType: events.TypeOptOut}, [][]int64{{8, 7, 6, 5, 4, 3, 2, 1}}, nil},
		{"by another type", ledger.Query{Limit: 10, EventType: events.TypeCampaignEnded}, [][]int64{nil}, nil},
		{"after cursor 0, newest first", ledger.Query{Limit: 3, Cursor: "0"}, [][]int64{nil}, nil},
		{"after cursor 0, oldest first", ledger.Query{Limit: 3, Cursor: "0", Ascending: true}, [][]int64{{1, 2, 3}, {4, 5, 6}, {7, 8}}, []string{"3", "6"}},
		{"after the head, oldest first", ledger.Query{Limit: 3, Cursor: "8", Ascending: true}, [][]int64{nil}, nil},
	}
	for _, tt := range tests {
		got, cursors := pages(t, l, "org_p", tt.q)
		if !slices.EqualFunc(got, tt.want, slices.Equal) || !slices.Equal(cursors, tt.cursors) {
			t.Errorf("%s: got pages %v with cursors %v, want %v with %v", tt.name, got, cursors, tt.want, tt.cursors)
		}
	}

	empty, err := l.Page(ctx, "org_nobody", ledger.Query{Limit: 3})
	if err != nil || empty.Entries == nil || len(empty.Entries) != 0 || empty.NextCursor != "" {
		t.Fatalf("empty log: got %+v %v, want an empty, non-nil page and no cursor", empty, err)
	}
	for _, bad := range []string{"x", "-1", "1.5"} {
		if _, err := l.Page(ctx, "org_p", ledger.Query{Limit: 3, Cursor: bad}); !errors.Is(err, ledger.ErrInvalidCursor) {
			t.Errorf("cursor %q: got %v, want ErrInvalidCursor", bad, err)
		}
	}

	if _, err := db.Collection(auditlog.EntriesCollection).DeleteOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key("org_p", 7)}}); err != nil {
		t.Fatal(err)
	}
	got, cursors := pages(t, l, "org_p", ledger.Query{Limit: 3})
	if want := [][]int64{{8, 6, 5}, {4, 3, 2}, {1}}; !slices.EqualFunc(got, want, slices.Equal) || !slices.Equal(cursors, []string{"5", "2"}) {
		t.Fatalf("with 7 deleted: got %v with cursors %v, want %v with [5 2]", got, cursors, want)
	}
}

// TestPageScanBudget: a filter that matches little walks at most 1,000
// positions per page and says where to go on, so a rare match deep in a
// long log is found on a later page, not by one request reading it all.
func TestPageScanBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, l := newLedger(t)
	const n = 1005
	evs := onDocuments(t, optOuts(t, "org_b", n), func(i int) string {
		if i == 0 {
			return "doc_rare"
		}
		return "doc_1"
	})
	if _, err := l.Append(ctx, "org_b", evs); err != nil {
		t.Fatal(err)
	}
	got, cursors := pages(t, l, "org_b", ledger.Query{Limit: 10, DocumentID: "doc_rare"})
	if want := [][]int64{nil, {1}}; !slices.EqualFunc(got, want, slices.Equal) || !slices.Equal(cursors, []string{"6"}) {
		t.Fatalf("got pages %v with cursors %v, want %v with [6]: the first walks 1005 down to 6", got, cursors, want)
	}
}
