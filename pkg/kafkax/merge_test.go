package kafkax_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
)

// writes records the number of items of each write a merger made.
type writes struct {
	mu    sync.Mutex
	sizes []int
}

func (w *writes) add(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sizes = append(w.sizes, n)
	return len(w.sizes)
}

func (w *writes) got() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.sizes)
}

// answer is each item's result: its own name, marked.
func answer(items []string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = "done " + it
	}
	return out
}

// TestMergerJoinsTheCallsThatWait: calls that come while a write is
// under way go in one write after it, each getting its own items'
// results; a failed write fails each of its calls, and a write that
// does not answer every item fails too.
func TestMergerJoinsTheCallsThatWait(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	fail := errors.New("store unavailable")
	var w writes
	m := kafkax.NewMerger(func(_ context.Context, items []string) ([]string, error) {
		if w.add(len(items)) == 1 {
			<-release
		}
		switch items[0] {
		case "fail":
			return nil, fail
		case "short":
			return nil, nil
		}
		return answer(items), nil
	})
	type reply struct {
		items, res []string
		err        error
	}
	replies := make(chan reply, 4)
	call := func(items ...string) {
		res, err := m.Write(context.Background(), items)
		replies <- reply{items, res, err}
	}
	go call("a0")
	servicetest.Eventually(t, 5*time.Second, "the first write under way", func() bool { return len(w.got()) == 1 })
	go call("a1", "b1")
	go call("a2")
	go call("a3", "b3", "c3")
	servicetest.Eventually(t, 5*time.Second, "three calls waiting", func() bool { return m.Waiting() == 3 })
	close(release)
	for range 4 {
		r := <-replies
		if r.err != nil || !slices.Equal(r.res, answer(r.items)) {
			t.Errorf("%v: got %v, %v; want its own results", r.items, r.res, r.err)
		}
	}
	if got := w.got(); !slices.Equal(got, []int{1, 6}) {
		t.Errorf("writes of %v items, want [1 6]", got)
	}
	if _, err := m.Write(context.Background(), []string{"fail"}); !errors.Is(err, fail) {
		t.Errorf("failed write: got %v, want %v", err, fail)
	}
	if res, err := m.Write(context.Background(), []string{"short", "x"}); err == nil {
		t.Errorf("a write answering 0 of 2 items: got %v, want an error", res)
	}
}

// TestMergerWaitsForTheCallsAnnounced: partitions handled at the same
// time announce their calls first; the first call to come does not
// write alone but waits until every announced call has come or
// withdrawn, and then all go in one write.
func TestMergerWaitsForTheCallsAnnounced(t *testing.T) {
	t.Parallel()
	var w writes
	m := kafkax.NewMerger(func(_ context.Context, items []string) ([]string, error) {
		w.add(len(items))
		return answer(items), nil
	})
	first, second, none := m.Expect(), m.Expect(), m.Expect()
	errs := make(chan error, 2)
	call := func(x *kafkax.Expected[string, string], item string) {
		res, err := x.Write(context.Background(), []string{item})
		if err == nil && !slices.Equal(res, answer([]string{item})) {
			err = fmt.Errorf("%s: got %v, want its own result", item, res)
		}
		errs <- err
	}
	go call(first, "a1")
	servicetest.Eventually(t, 5*time.Second, "the first call waiting", func() bool { return m.Waiting() == 1 })
	go call(second, "a2")
	servicetest.Eventually(t, 5*time.Second, "the second call waiting", func() bool { return m.Waiting() == 2 })
	if got := w.got(); len(got) != 0 {
		t.Fatalf("writes of %v items while a call was still announced, want none yet", got)
	}
	none.Withdraw()
	none.Withdraw() // twice is once
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := w.got(); !slices.Equal(got, []int{2}) {
		t.Errorf("writes of %v items, want [2]", got)
	}
	// Nothing is announced any more: a call alone writes at once, and so
	// does a second Write of an announcement already used.
	if _, err := m.Write(context.Background(), []string{"a3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Write(context.Background(), []string{"a4"}); err != nil {
		t.Fatal(err)
	}
	if got := w.got(); !slices.Equal(got, []int{2, 1, 1}) {
		t.Errorf("writes of %v items, want [2 1 1]", got)
	}
}
