package consumer

import (
	"context"
	"sync"

	"github.com/rcm-platform/rcm/services/feed/internal/store"
)

// writeFunc stores batches of several accounts, at most one per account.
type writeFunc func(ctx context.Context, batches []store.Batch) ([][]store.Appended, error)

// merger makes the writes of partitions handled at the same time one
// write: a partition's batch that comes while a write is under way waits
// for it, and then goes with every other that waited, in the same few
// inserts. Partitions hold different accounts, so the batches of one
// write never share an account. On the embedded store an insert costs
// about the same for 5 documents as for 50, and inserts in parallel wait
// for each other: fewer, larger inserts are what lowers the latency.
type merger struct {
	write writeFunc

	mu    sync.Mutex
	queue []*mergeCall
	busy  bool // a write is under way
}

type mergeCall struct {
	batches []store.Batch
	results [][]store.Appended
	err     error
	done    chan struct{} // closed once results or err is set
	lead    chan struct{} // closed when this call is to make the next write
}

// append stores batches, with those of other calls waiting meanwhile,
// and returns their results; an error of the write is every call's.
// The write runs with the context of the call that makes it: one
// cancelled fails the others, which their partitions retry.
func (m *merger) append(ctx context.Context, batches []store.Batch) ([][]store.Appended, error) {
	c := &mergeCall{batches: batches, done: make(chan struct{}), lead: make(chan struct{})}
	m.mu.Lock()
	m.queue = append(m.queue, c)
	lead := !m.busy
	m.busy = true
	m.mu.Unlock()
	if lead {
		m.run(ctx)
	}
	for {
		select {
		case <-c.done:
			return c.results, c.err
		case <-c.lead:
			m.run(ctx)
			c.lead = nil
		}
	}
}

// run makes one write of every call waiting, then hands the next write
// to the first call that came meanwhile, if any.
func (m *merger) run(ctx context.Context) {
	m.mu.Lock()
	calls := m.queue
	m.queue = nil
	m.mu.Unlock()
	var all []store.Batch
	for _, c := range calls {
		all = append(all, c.batches...)
	}
	results, err := m.write(ctx, all)
	at := 0
	for _, c := range calls {
		if err != nil {
			c.err = err
		} else {
			c.results = results[at : at+len(c.batches)]
		}
		at += len(c.batches)
		close(c.done)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.queue) == 0 {
		m.busy = false
		return
	}
	close(m.queue[0].lead)
}
