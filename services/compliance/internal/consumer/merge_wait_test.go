package consumer

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMergerWaitsForTheOtherPartitionsOfItsFetch: the first partition of
// a fetch of three to come does not write alone while the other two have
// not come yet: it waits for them, and the three go in one write; a
// partition the loop never hands over holds the write only for the
// merger's wait.
func TestMergerWaitsForTheOtherPartitionsOfItsFetch(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		writes []int
	)
	m := &merger{wait: time.Minute}
	m.write = func(_ context.Context, batch []kafkax.Decoded[events.Event]) ([]kafkax.Rejected, error) {
		mu.Lock()
		writes = append(writes, len(batch))
		mu.Unlock()
		return nil, nil
	}
	got := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), writes...)
	}
	one := func() []kafkax.Decoded[events.Event] {
		return []kafkax.Decoded[events.Event]{{Record: &kgo.Record{}}}
	}
	errs := make(chan error, 3)
	fetch := new(int)
	go func() { _, err := m.appendOf(context.Background(), one(), 3, fetch); errs <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for m.waiting() != 1 || !m.isBusy() {
		if time.Now().After(deadline) {
			t.Fatal("the first partition never waited")
		}
		time.Sleep(time.Millisecond)
	}
	if w := got(); len(w) != 0 {
		t.Fatalf("writes of %v events before the fetch's other partitions came, want none yet", w)
	}
	for range 2 {
		go func() { _, err := m.appendOf(context.Background(), one(), 3, fetch); errs <- err }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if w := got(); len(w) != 1 || w[0] != 3 {
		t.Fatalf("writes of %v events, want [3]", w)
	}

	// A fetch of two whose second partition never comes.
	m.mu.Lock()
	m.wait = 50 * time.Millisecond
	m.mu.Unlock()
	start := time.Now()
	if _, err := m.appendOf(context.Background(), one(), 2, new(int)); err != nil {
		t.Fatal(err)
	}
	if w := got(); len(w) != 2 || w[1] != 1 {
		t.Fatalf("writes of %v events, want [3 1]", w)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("the lone partition wrote after %v, before the merger's wait (50ms)", d)
	}
}
