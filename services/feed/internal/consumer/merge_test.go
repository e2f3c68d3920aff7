package consumer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/services/feed/internal/store"
)

// TestMergerJoinsTheBatchesThatWait: batches that come while a write is
// under way go in one write after it, each call getting its own results;
// a failed write fails each of its calls.
func TestMergerJoinsTheBatchesThatWait(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var sizes []int
	fail := errors.New("store unavailable")
	m := &merger{}
	m.write = func(_ context.Context, batches []store.Batch) ([][]store.Appended, error) {
		m.mu.Lock()
		sizes = append(sizes, len(batches))
		first := len(sizes) == 1
		m.mu.Unlock()
		if first {
			<-release
		}
		if batches[0].Account == "acct_fail" {
			return nil, fail
		}
		out := make([][]store.Appended, len(batches))
		for i, b := range batches {
			out[i] = []store.Appended{{EventID: "evt_" + b.Account}}
		}
		return out, nil
	}
	type answer struct {
		account string
		res     [][]store.Appended
		err     error
	}
	answers := make(chan answer, 4)
	call := func(account string) {
		res, err := m.append(context.Background(), []store.Batch{{Account: account}})
		answers <- answer{account, res, err}
	}
	go call("acct_0")
	waitFor(t, "the first write under way", func() bool { return len(sizesOf(m, &sizes)) == 1 })
	for i := 1; i <= 3; i++ {
		go call(fmt.Sprintf("acct_%d", i))
	}
	waitFor(t, "three calls waiting", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.queue) == 3
	})
	close(release)
	for range 4 {
		a := <-answers
		if a.err != nil || len(a.res) != 1 || a.res[0][0].EventID != "evt_"+a.account {
			t.Errorf("%s: got %v, %v; want its own result", a.account, a.res, a.err)
		}
	}
	if got := sizesOf(m, &sizes); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Errorf("writes of %v batches, want [1 3]", got)
	}
	if _, err := m.append(context.Background(), []store.Batch{{Account: "acct_fail"}}); !errors.Is(err, fail) {
		t.Errorf("failed write: got %v, want %v", err, fail)
	}
}

func sizesOf(m *merger, sizes *[]int) []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int(nil), (*sizes)...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestMergerWaitsForTheCallsAnnounced: partitions handled at the same
// time announce their calls first; the first batch to come does not
// write alone but waits until every announced call has come or
// withdrawn, and then all go in one write.
func TestMergerWaitsForTheCallsAnnounced(t *testing.T) {
	t.Parallel()
	var sizes []int
	m := &merger{}
	m.write = func(_ context.Context, batches []store.Batch) ([][]store.Appended, error) {
		m.mu.Lock()
		sizes = append(sizes, len(batches))
		m.mu.Unlock()
		out := make([][]store.Appended, len(batches))
		for i, b := range batches {
			out[i] = []store.Appended{{EventID: "evt_" + b.Account}}
		}
		return out, nil
	}
	first, second, none := m.expect(), m.expect(), m.expect()
	answers := make(chan error, 2)
	call := func(x *expected, account string) {
		res, err := x.append(context.Background(), []store.Batch{{Account: account}})
		if err == nil && (len(res) != 1 || res[0][0].EventID != "evt_"+account) {
			err = fmt.Errorf("%s: got %v, want its own result", account, res)
		}
		answers <- err
	}
	go call(first, "acct_1")
	waitFor(t, "the first call waiting", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.queue) == 1
	})
	go call(second, "acct_2")
	waitFor(t, "the second call waiting", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.queue) == 2
	})
	if got := sizesOf(m, &sizes); len(got) != 0 {
		t.Fatalf("writes of %v batches while a call was still announced, want none yet", got)
	}
	none.withdraw()
	none.withdraw() // twice is once
	for range 2 {
		if err := <-answers; err != nil {
			t.Error(err)
		}
	}
	if got := sizesOf(m, &sizes); len(got) != 1 || got[0] != 2 {
		t.Errorf("writes of %v batches, want [2]", got)
	}
	// Nothing is announced any more: a call alone writes at once.
	if _, err := m.append(context.Background(), []store.Batch{{Account: "acct_3"}}); err != nil {
		t.Fatal(err)
	}
	if got := sizesOf(m, &sizes); len(got) != 2 || got[1] != 1 {
		t.Errorf("writes of %v batches, want [2 1]", got)
	}
}
