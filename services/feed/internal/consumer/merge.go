package consumer

import (
	"context"
	"sync"

	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
)

// writeFunc stores (and publishes) batches of several accounts, at most
// one per account.
type writeFunc func(ctx context.Context, batches []store.Batch) ([][]store.Appended, error)

// merger makes the writes of partitions handled at the same time one
// write: a partition's batch that comes while a write is under way waits
// for it, and then goes with every other that waited, in the same few
// inserts. Partitions hold different accounts, so the batches of one
// write never share an account. On the embedded store an insert costs
// about the same for 5 documents as for 50, and inserts in parallel wait
// for each other: fewer, larger inserts are what lowers the latency.
//
// The partitions of a fetch are handed over together, each announcing
// its call (expect) before it decodes: the first batch to come then waits
// for the others announced, instead of writing alone and making them
// wait for its write, so that a fetch costs one write, not two. What it
// relies on is that an announced call comes or withdraws soon: between
// the two a handler only decodes its records and parks the malformed
// ones on the dead-letter topic.
type merger struct {
	write writeFunc

	mu      sync.Mutex
	queue   []*mergeCall
	busy    bool          // a write is under way, or its lead is chosen
	coming  int           // calls announced that have neither come nor withdrawn
	arrived chan struct{} // closed and replaced when a call joins the queue
}

type mergeCall struct {
	batches []store.Batch
	results [][]store.Appended
	err     error
	done    chan struct{} // closed once results or err is set
	lead    chan struct{} // closed when this call is to make the next write
}

// expected is a call announced: append or withdraw ends it.
type expected struct {
	m    *merger
	over bool
}

// expect announces a call of append to come.
func (m *merger) expect() *expected {
	m.mu.Lock()
	m.coming++
	m.mu.Unlock()
	return &expected{m: m}
}

// withdraw says that the call announced will not come; after append, or
// a second time, it does nothing.
func (x *expected) withdraw() {
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

// append is the merger's append for the call announced.
func (x *expected) append(ctx context.Context, batches []store.Batch) ([][]store.Appended, error) {
	if x.over {
		return x.m.append(ctx, batches)
	}
	x.over = true
	return x.m.join(ctx, batches, true)
}

// append stores batches, with those of other calls waiting meanwhile,
// and returns their results; an error of the write is every call's.
// The write runs with the context of the call that makes it: one
// cancelled fails the others, which their partitions retry.
func (m *merger) append(ctx context.Context, batches []store.Batch) ([][]store.Appended, error) {
	return m.join(ctx, batches, false)
}

func (m *merger) join(ctx context.Context, batches []store.Batch, announced bool) ([][]store.Appended, error) {
	c := &mergeCall{batches: batches, done: make(chan struct{}), lead: make(chan struct{})}
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
func (m *merger) next() *mergeCall {
	if m.busy || m.coming > 0 || len(m.queue) == 0 {
		return nil
	}
	m.busy = true
	return m.queue[0]
}

// run makes one write of every call waiting, then hands the next write
// to the first call that came meanwhile, if any.
func (m *merger) run(ctx context.Context) {
	m.gather(ctx)
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
	m.busy = false
	next := m.next()
	m.mu.Unlock()
	if next != nil {
		close(next.lead)
	}
}

// gather waits until every write of the leader's fetch under way
// (kafkax.WritesOf: the partitions handed over with it, counted from
// before their goroutines start) is queued, or ctx is done. The
// announcements (expect) cover a handler's decoding; this covers a
// handler whose goroutine has not started when the first batch is ready,
// which would otherwise write alone and make the others write a second
// time. Only one fetch is handled at a time, so the calls queued are all
// of the leader's fetch.
func (m *merger) gather(ctx context.Context) {
	kafkax.WritesOf(ctx).Await(ctx, func() (int, <-chan struct{}) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.queue), m.arrived
	})
}
