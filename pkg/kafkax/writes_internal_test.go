package kafkax

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestWritesAwait: Await returns once the calls queued are as many as the
// writes under way, whichever changes last; at once on a nil Writes; and
// when its context ends.
func TestWritesAwait(t *testing.T) {
	t.Parallel()
	w := newWrites()
	w.add(3)
	var (
		mu     sync.Mutex
		n      int
		more   = make(chan struct{})
		joined = func() {
			mu.Lock()
			n++
			close(more)
			more = make(chan struct{})
			mu.Unlock()
		}
	)
	queued := func() (int, <-chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		return n, more
	}
	done := make(chan struct{})
	go func() { w.Await(context.Background(), queued); close(done) }()
	joined()
	w.add(-1) // one write returned without joining
	select {
	case <-done:
		t.Fatal("Await returned with 1 call queued and 2 writes under way")
	case <-time.After(20 * time.Millisecond):
	}
	joined()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Await still waiting with 2 calls queued and 2 writes under way")
	}

	var none *Writes
	none.Await(context.Background(), queued) // returns at once

	ctx, cancel := context.WithCancel(context.Background())
	w.add(5)
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	w.Await(ctx, queued) // returns when ctx ends
}
