package tickets_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/services/feed/internal/tickets"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

// replica is one feed instance's stream route behind the ticket guard,
// with a client of its own on the shared store; its handler answers with
// the query it was given.
func replica(t *testing.T, db string, now func() time.Time) *httptest.Server {
	t.Helper()
	store := tickets.New(mongotest.Client(t).Database(db).Collection(tickets.Collection), now)
	srv := httptest.NewServer(store.Middleware(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "opened ?"+r.URL.RawQuery)
	})))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestTicketOpensOneStreamAcrossReplicas: a ticket's id opens a stream on
// the first replica it reaches, and then on none, also on another
// replica; the handler never sees the id. A request without a ticket is
// not the guard's business; an id that is no ULID is refused.
func TestTicketOpensOneStreamAcrossReplicas(t *testing.T) {
	t.Parallel()
	db := mongotest.NewDatabase(t)
	a, b := replica(t, db, time.Now), replica(t, db, time.Now)
	id := strings.ToLower(ulid.Make().String())
	const refused = `{"error":"Invalid or expired token."}`

	if status, body := get(t, a.URL+"/v1/activity/stream?lastEventId=4&ticket="+id); status != 200 || body != "opened ?lastEventId=4" {
		t.Fatalf("first use on replica a: got %d %q, want 200 without the ticket in the query", status, body)
	}
	for name, srv := range map[string]*httptest.Server{"replica a": a, "replica b": b} {
		if status, body := get(t, srv.URL+"/v1/activity/stream?ticket="+id); status != 401 || body != refused {
			t.Errorf("second use on %s: got %d %q, want 401 %s", name, status, body, refused)
		}
	}
	if status, body := get(t, b.URL+"/v1/activity/stream?lastEventId=4"); status != 200 || body != "opened ?lastEventId=4" {
		t.Errorf("no ticket: got %d %q, want it passed through", status, body)
	}
	for _, bad := range []string{"", "not-a-ulid", strings.ToUpper(id), id + "&ticket=" + id} {
		if status, body := get(t, b.URL+"/v1/activity/stream?ticket="+bad); status != 401 || body != refused {
			t.Errorf("ticket %q: got %d %q, want 401 %s", bad, status, body, refused)
		}
	}
}

// TestOldTicketsAreSwept: the record of a ticket is removed once the
// ticket is long expired, by the next claim that finds a sweep due; a
// recent one stays.
func TestOldTicketsAreSwept(t *testing.T) {
	t.Parallel()
	db := mongotest.NewDatabase(t)
	coll := mongotest.Client(t).Database(db).Collection(tickets.Collection)
	now := time.Now()
	clock := func() time.Time { return now }
	store := tickets.New(coll, clock)
	old := strings.ToLower(ulid.MustNew(ulid.Timestamp(now.Add(-time.Hour)), ulid.DefaultEntropy()).String())
	recent := strings.ToLower(ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String())
	for _, id := range []string{old, recent} {
		if err := store.Claim(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Minute)
	if err := store.Claim(t.Context(), strings.ToLower(ulid.Make().String())); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int64{old: 0, recent: 1} {
		n, err := coll.CountDocuments(t.Context(), map[string]any{"_id": id})
		if err != nil || n != want {
			t.Errorf("record of %s: %d (%v), want %d", id, n, err, want)
		}
	}
	if tickets.Keep < 5*time.Minute {
		t.Errorf("Keep is %s: a ticket of a gateway whose clock runs ahead could outlive its record", tickets.Keep)
	}
}
