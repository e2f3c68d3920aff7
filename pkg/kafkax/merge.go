package kafkax

import (
	"context"
	"fmt"
	"sync"
)

// Merger makes the writes of partitions handled at the same time
// (PartitionsAtOnce) one write: the items of a call that comes while a
// write is under way wait for it, and then go with those of every other
// call that waited, in the same few store commands and produce calls.
// On the embedded store an insert of 100 documents takes about as long
// as one of 20, and inserts in parallel wait for each other: fewer,
// larger writes are what lowers the time a fetch takes. Only one write
// runs at a time, so a writer that must never append to one account from
// two places at once (seqlog's rule) keeps it, whichever partitions the
// account's events came in; each call's items keep their order.
//
// A write waits, before it starts, for the calls it can know are coming:
//   - those announced (Expect) that have neither come nor withdrawn: a
//     handler that decodes inside its call announces itself first, so
//     that the first batch of a fetch to be decoded does not write alone
//     and make the others write a second time. What that relies on is
//     that an announced call comes or withdraws soon;
//   - the other writes of its fetch that the poll loop has under way
//     (WritesOf), which covers a handler whose goroutine has not started
//     yet. Only one fetch is handled at a time, so the calls queued are
//     all of that fetch.
//
// It waits for nothing else: a partition that is not under way (waiting
// to retry) is not waited for.
type Merger[T, R any] struct {
	write func(ctx context.Context, items []T) ([]R, error)

	mu      sync.Mutex
	queue   []*mergeCall[T, R]
	busy    bool          // a write is under way, or its lead is chosen
	coming  int           // calls announced that have neither come nor withdrawn
	arrived chan struct{} // closed and replaced when a call joins the queue
}

// NewMerger returns a Merger whose writes are write's: it is given the
// items of every call of the write, in the order the calls came, and
// returns one result for each.
func NewMerger[T, R any](write func(ctx context.Context, items []T) ([]R, error)) *Merger[T, R] {
	return &Merger[T, R]{write: write}
}

type mergeCall[T, R any] struct {
	items   []T
	results []R
	err     error
	done    chan struct{} // closed once results or err is set
	lead    chan struct{} // closed when this call is to make the next write
}

// Write writes items, with those of the other calls waiting meanwhile,
// and returns their results; an error of the write is every call's. The
// write runs with the context of the call that makes it: one cancelled
// fails the others, which their partitions retry.
func (m *Merger[T, R]) Write(ctx context.Context, items []T) ([]R, error) {
	return m.join(ctx, items, false)
}

// Expected is a call of Write announced: Write or Withdraw ends it.
type Expected[T, R any] struct {
	m    *Merger[T, R]
	over bool
}

// Expect announces a call of Write to come.
func (m *Merger[T, R]) Expect() *Expected[T, R] {
	m.mu.Lock()
	m.coming++
	m.mu.Unlock()
	return &Expected[T, R]{m: m}
}

// Write is the Merger's Write for the call announced.
func (x *Expected[T, R]) Write(ctx context.Context, items []T) ([]R, error) {
	if x.over {
		return x.m.Write(ctx, items)
	}
	x.over = true
	return x.m.join(ctx, items, true)
}

// Withdraw says that the call announced will not come; after Write, or
// a second time, it does nothing.
func (x *Expected[T, R]) Withdraw() {
	if x.over {
		return
	}
	x.over = true
	m := x.m
	m.mu.Lock()
	m.coming--
	next := m.next()
	m.mu.Unlock()
	if next != nil {
		close(next.lead)
	}
}

// Waiting returns how many calls wait for the next write.
func (m *Merger[T, R]) Waiting() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queue)
}

func (m *Merger[T, R]) join(ctx context.Context, items []T, announced bool) ([]R, error) {
	c := &mergeCall[T, R]{items: items, done: make(chan struct{}), lead: make(chan struct{})}
	m.mu.Lock()
	m.queue = append(m.queue, c)
	if m.arrived != nil {
		close(m.arrived)
	}
	m.arrived = make(chan struct{})
	if announced {
		m.coming--
	}
	next := m.next()
	m.mu.Unlock()
	if next != nil {
		close(next.lead)
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

// next returns the call to make the next write, the first waiting, when
// no write is under way and no call announced is still to come; m.mu
// must be held.
func (m *Merger[T, R]) next() *mergeCall[T, R] {
	if m.busy || m.coming > 0 || len(m.queue) == 0 {
		return nil
	}
	m.busy = true
	return m.queue[0]
}

// run makes one write of every call waiting, then hands the next write
// to the first call that came meanwhile, if any.
func (m *Merger[T, R]) run(ctx context.Context) {
	WritesOf(ctx).Await(ctx, func() (int, <-chan struct{}) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.queue), m.arrived
	})
	m.mu.Lock()
	calls := m.queue
	m.queue = nil
	m.mu.Unlock()
	var all []T
	for _, c := range calls {
		all = append(all, c.items...)
	}
	results, err := m.write(ctx, all)
	if err == nil && len(results) != len(all) {
		err = fmt.Errorf("merged write of %d items returned %d results", len(all), len(results))
	}
	at := 0
	for _, c := range calls {
		if err != nil {
			c.err = err
		} else {
			c.results = results[at : at+len(c.items) : at+len(c.items)]
		}
		at += len(c.items)
		close(c.done)
	}
	m.mu.Lock()
	m.busy = false
	next := m.next()
	m.mu.Unlock()
	if next != nil {
		close(next.lead)
	}
}
