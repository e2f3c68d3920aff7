package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/rcm-platform/rcm/services/feed/internal/hub"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

// gatedStore is a store whose reads wait while a gate is set, and a
// writer to the same database that never waits.
type gatedStore struct {
	*store.Store
	writer *store.Store
	gate   atomic.Pointer[chan struct{}]
}

func newStore(t *testing.T) *gatedStore {
	t.Helper()
	g := &gatedStore{}
	cl, err := mongo.Connect(options.Client().ApplyURI(mongotest.URI(t)).SetMonitor(&event.CommandMonitor{
		Started: func(_ context.Context, e *event.CommandStartedEvent) {
			if gate := g.gate.Load(); gate != nil && e.CommandName == "find" {
				<-*gate
			}
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	name := mongotest.NewDatabase(t)
	g.Store = store.New(store.Config{DB: cl.Database(name)})
	g.writer = store.New(store.Config{DB: mongotest.Client(t).Database(name)})
	if err := g.writer.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return g
}

// add stores the items of seqs, which must be the next ones.
func (g *gatedStore) add(t *testing.T, seqs ...int64) {
	t.Helper()
	var items []activity.Item
	for _, s := range seqs {
		it := item(s)
		it.Seq = 0
		items = append(items, it)
	}
	res, err := g.writer.Append(context.Background(), "org_a", items)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Seq != seqs[i] || r.Replay {
			t.Fatalf("stored %+v, want item %d", r, seqs[i])
		}
	}
}

func item(seq int64) activity.Item {
	return activity.Item{ID: fmt.Sprintf("evt_%026d", seq), Seq: seq, Type: "opt_out", Summary: "Borrower opted out of SMS",
		OccurredAt: "2026-04-27T10:00:00.000Z"}
}

func entry(seq int64) hub.Entry {
	it := item(seq)
	data, _ := json.Marshal(it)
	return hub.Entry{Item: it, JSON: data}
}

type fixture struct {
	store *gatedStore
	hub   *hub.Hub
	url   string
	stop  chan struct{}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{store: newStore(t), hub: hub.New(16, prometheus.NewRegistry()), stop: make(chan struct{})}
	h := New(Config{Store: f.store.Store, Hub: f.hub, Heartbeat: time.Hour, Stop: f.stop, Now: time.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, prometheus.NewRegistry())
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := principal.Principal{AccountID: "org_a", UserID: "user_a"}
			next.ServeHTTP(w, r.WithContext(principal.WithPrincipal(r.Context(), p)))
		})
	})
	h.StreamRoutes(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// open connects a stream and returns its event ids as they come; it
// returns once the response headers arrived, that is, once subscribed.
func (f *fixture) open(t *testing.T, lastEventID string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url+"/v1/activity/stream", nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	ids := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ids)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
				ids <- id
			}
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	return ids
}

func expect(t *testing.T, ids <-chan string, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got, ok := <-ids:
			if !ok {
				t.Fatalf("stream ended, want id %s", w)
			}
			if got != w {
				t.Fatalf("got id %s, want %s", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no id within 5s, want %s", w)
		}
	}
}

func TestStreamFillsGapsAndSkipsRepeats(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.store.add(t, 1, 2)
	ids := f.open(t, "") // live from the head, 2
	f.store.add(t, 3, 4, 5)
	f.hub.Publish("org_a", entry(5)) // 3 and 4 were published elsewhere, or late
	expect(t, ids, "3", "4", "5")
	f.hub.Publish("org_a", entry(4)) // late: already sent
	f.hub.Publish("org_a", entry(5)) // a republished replay: already sent
	f.store.add(t, 6)
	f.hub.Publish("org_a", entry(6))
	expect(t, ids, "6")
}

func TestStreamResumesThenGoesLive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.store.add(t, 1, 2, 3, 4)
	ids := f.open(t, "1")
	expect(t, ids, "2", "3", "4")
	f.hub.Publish("org_a", entry(3)) // seen in history already
	f.store.add(t, 5)
	f.hub.Publish("org_a", entry(5))
	expect(t, ids, "5")
}

func TestStreamEndsOnStop(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ids := f.open(t, "")
	close(f.stop)
	select {
	case _, ok := <-ids:
		if ok {
			t.Fatal("got an item, want the stream to end")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5s after stop")
	}
}

func TestStreamEndsWhenDroppedAsSlow(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ids := f.open(t, "")
	// The stream is held up filling a gap from the store while more than
	// its buffer arrives: the hub drops it rather than wait, the stream
	// ends after what it had, and the client resumes from its last id.
	gate := make(chan struct{})
	f.store.gate.Store(&gate)
	for seq := int64(1); seq <= 100; seq++ {
		f.store.add(t, seq)
		if seq > 1 {
			f.hub.Publish("org_a", entry(seq))
		}
	}
	close(gate)
	var got []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case id, ok := <-ids:
			if !ok {
				// 1 from the store, 2 that showed the gap, then the 16
				// the buffer held.
				if len(got) != 18 || got[0] != "1" || got[17] != "18" {
					t.Fatalf("got ids %v, want 1 to 18 and then the end", got)
				}
				return
			}
			got = append(got, id)
		case <-timeout:
			t.Fatalf("stream still open after ids %v", got)
		}
	}
}
