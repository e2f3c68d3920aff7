package hub

import (
	"errors"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"golang.org/x/sync/errgroup"
)

func entry(seq int64) Entry { return Entry{Item: activity.Item{Seq: seq}} }

// drain returns the seqs waiting in s without blocking, and why s was
// dropped, if it was.
func drain(s *Subscription) ([]int64, error) {
	var out []int64
	select {
	case <-s.Ready():
	default:
		return nil, nil
	}
	entries, err := s.Take()
	for _, e := range entries {
		out = append(out, e.Item.Seq)
	}
	return out, err
}

// seqs is drain without the reason.
func seqs(s *Subscription) []int64 {
	out, _ := drain(s)
	return out
}

func TestPublishReachesOnlyTheAccount(t *testing.T) {
	t.Parallel()
	h := New(8, prometheus.NewRegistry())
	a1, a2, b := h.Subscribe("org_a"), h.Subscribe("org_a"), h.Subscribe("org_b")
	if got := testutil.ToFloat64(h.subscribers); got != 3 {
		t.Fatalf("got %v subscribers, want 3", got)
	}
	h.Publish("org_a", entry(1))
	h.Publish("org_b", entry(7))
	h.Publish("org_a", entry(2))
	h.Publish("org_c", entry(9))
	tests := []struct {
		name string
		sub  *Subscription
		want []int64
	}{
		{"first of a", a1, []int64{1, 2}},
		{"second of a", a2, []int64{1, 2}},
		{"b", b, []int64{7}},
	}
	for _, tt := range tests {
		if got := seqs(tt.sub); !slices.Equal(got, tt.want) {
			t.Fatalf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	a1.Close()
	a1.Close()
	h.Publish("org_a", entry(3))
	if got := seqs(a2); !slices.Equal(got, []int64{3}) {
		t.Fatalf("after the other closed: got %v, want [3]", got)
	}
	if got := testutil.ToFloat64(h.subscribers); got != 2 {
		t.Fatalf("got %v subscribers, want 2", got)
	}
}

func TestSlowSubscriberIsDropped(t *testing.T) {
	t.Parallel()
	h := New(2, prometheus.NewRegistry())
	slow, fast := h.Subscribe("org_a"), h.Subscribe("org_a")
	for seq := int64(1); seq <= 2; seq++ {
		h.Publish("org_a", entry(seq))
		seqs(fast)
	}
	h.Publish("org_a", entry(3)) // slow's buffer is full: dropped, without waiting
	if got := seqs(fast); !slices.Equal(got, []int64{3}) {
		t.Fatalf("fast: got %v, want [3]", got)
	}
	got, err := drain(slow) // what it had, and then why it ends
	if !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("slow: got %v, want [1 2] then dropped", got)
	}
	if !errors.Is(err, ErrSlow) {
		t.Fatalf("got reason %v, want ErrSlow", err)
	}
	slow.Close() // after the drop: does nothing
	if got := testutil.ToFloat64(h.dropped); got != 1 {
		t.Fatalf("got %v dropped, want 1", got)
	}
	if got := testutil.ToFloat64(h.subscribers); got != 1 {
		t.Fatalf("got %v subscribers, want 1", got)
	}
}

// A subscriber waiting for items holds next to nothing: the buffer bounds
// how many items it may have waiting, it is not allocated up front, and a
// waiting item is the one entry every subscriber shares.
func TestSubscriberIsSmall(t *testing.T) {
	const n = 2000
	h := New(DefaultBuffer, prometheus.NewRegistry())
	subs := make([]*Subscription, 0, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		subs = append(subs, h.Subscribe("org_a"))
	}
	h.Publish("org_a", entry(1))
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 512 {
		t.Fatalf("a subscriber with one item waiting took %d bytes, want at most 512", per)
	}
	for _, s := range subs {
		if got := seqs(s); !slices.Equal(got, []int64{1}) {
			t.Fatalf("got %v, want [1]", got)
		}
	}
}

// BenchmarkFanOut measures handing items to 10,000 subscribers of one
// account, each drained by its own goroutine as a stream would be, until
// every subscriber has every item (or was dropped as too slow).
func BenchmarkFanOut(b *testing.B) {
	const subscribers = 10_000
	h := New(DefaultBuffer, prometheus.NewRegistry())
	var received atomic.Int64
	var g errgroup.Group
	for range subscribers {
		s := h.Subscribe("org_a")
		g.Go(func() error {
			for range s.Ready() {
				entries, err := s.Take()
				received.Add(int64(len(entries)))
				if err != nil {
					return nil
				}
			}
			return nil
		})
	}
	b.ResetTimer()
	for i := range b.N {
		h.Publish("org_a", entry(int64(i+1)))
	}
	// End every subscription: each goroutine drains what it holds, then
	// sees its channel closed.
	h.mu.Lock()
	for s := range h.subs["org_a"] {
		h.remove(s, errors.New("benchmark over"))
	}
	h.mu.Unlock()
	_ = g.Wait()
	b.StopTimer()
	b.ReportMetric(float64(received.Load())/float64(b.N), "deliveries/op")
	b.ReportMetric(testutil.ToFloat64(h.dropped), "dropped")
}

// TestHeadIsKnownWhileSubscribed: the head a subscriber learnt from the
// store, raised by what was published to it meanwhile and by every item
// since, is handed to the next subscribers of the account, until it has
// none; a dropped subscriber teaches nothing.
func TestHeadIsKnownWhileSubscribed(t *testing.T) {
	t.Parallel()
	h := New(2, prometheus.NewRegistry())
	a := h.Subscribe("org_a")
	if _, known := a.Head(); known {
		t.Fatal("first subscriber: head known, want unknown")
	}
	h.Publish("org_a", entry(3)) // stored after a read the store
	a.Learn(2)
	b := h.Subscribe("org_a")
	if head, known := b.Head(); !known || head != 3 {
		t.Fatalf("after learning 2 with 3 published meanwhile: head %d (known %v), want 3", head, known)
	}
	h.Publish("org_a", entry(5))
	h.Publish("org_a", entry(4))
	if head, _ := h.Subscribe("org_b").Head(); head != 0 {
		t.Fatalf("another account: head %d, want unknown", head)
	}
	c := h.SubscribeFunc("org_a", func() {})
	if head, known := c.Head(); !known || head != 5 {
		t.Fatalf("after 5 and 4: head %d (known %v), want 5", head, known)
	}
	for _, s := range []*Subscription{a, b, c} {
		s.Close()
	}
	d := h.Subscribe("org_a")
	if _, known := d.Head(); known {
		t.Fatal("after every subscriber left: head known, want unknown")
	}
	for seq := int64(6); seq <= 8; seq++ {
		h.Publish("org_a", entry(seq)) // d is dropped as slow at 8
	}
	d.Learn(8)
	if _, known := h.Subscribe("org_a").Head(); known {
		t.Fatal("learnt from a dropped subscriber: head known, want unknown")
	}
}
