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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/rcm-platform/rcm/services/feed/internal/hub"
)

// memStore is an account's sequence in memory.
type memStore struct {
	mu    sync.Mutex
	items map[int64]activity.Item
	gate  chan struct{} // when set, Get waits until it is closed
}

func (m *memStore) add(seqs ...int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range seqs {
		m.items[s] = item(s)
	}
}

func (m *memStore) LoadHead(_ context.Context, _, _ string) (seqlog.Head, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var h seqlog.Head
	for h.Seq+1 > 0 {
		if _, ok := m.items[h.Seq+1]; !ok {
			return h, nil
		}
		h.Seq++
	}
	return h, nil
}

func (m *memStore) Get(ctx context.Context, account string, seq int64, v any) (bool, error) {
	m.mu.Lock()
	gate := m.gate
	m.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.items[seq]
	if ok {
		*v.(*activity.Record) = activity.Record{Key: seqlog.Key(account, seq), AccountID: account, Item: it}
	}
	return ok, nil
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
	store *memStore
	hub   *hub.Hub
	url   string
	stop  chan struct{}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{store: &memStore{items: map[int64]activity.Item{}}, hub: hub.New(16, prometheus.NewRegistry()), stop: make(chan struct{})}
	h := New(Config{Store: f.store, Hub: f.hub, Heartbeat: time.Hour, Stop: f.stop, Now: time.Now,
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
	f.store.add(1, 2)
	ids := f.open(t, "") // live from the head, 2
	f.store.add(3, 4, 5)
	f.hub.Publish("org_a", entry(5)) // 3 and 4 were published elsewhere, or late
	expect(t, ids, "3", "4", "5")
	f.hub.Publish("org_a", entry(4)) // late: already sent
	f.hub.Publish("org_a", entry(5)) // a republished replay: already sent
	f.store.add(6)
	f.hub.Publish("org_a", entry(6))
	expect(t, ids, "6")
}

func TestStreamResumesThenGoesLive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.store.add(1, 2, 3, 4)
	ids := f.open(t, "1")
	expect(t, ids, "2", "3", "4")
	f.hub.Publish("org_a", entry(3)) // seen in history already
	f.store.add(5)
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
	f.store.mu.Lock()
	f.store.gate = gate
	f.store.mu.Unlock()
	for seq := int64(1); seq <= 100; seq++ {
		f.store.add(seq)
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
