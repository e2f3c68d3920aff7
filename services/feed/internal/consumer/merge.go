package consumer

import (
	"cmp"
	"context"
	"sync"
	"time"

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

	mu     sync.Mutex
	queue  []*mergeCall
	busy   bool // a write is under way, or its lead is chosen
	coming int  // calls announced that have neither come nor withdrawn
	// The fetch whose partitions are being handed over (its
	// kafkax.FetchPartitions key), and how many of them have not
	// announced their call yet: they count as coming until they do, or
	// until unseenUntil (one the loop did not hand over after all).
	fetch       any
	unseen      int
	unseenUntil time.Time
	// wait is how long unseen partitions count (siblingWait when 0).
	wait time.Duration
}

// siblingWait bounds how long a write waits for the partitions of its
// fetch that have not announced their call: they start a few
// microseconds after the first, and decode for about a millisecond.
const siblingWait = 5 * time.Millisecond

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

// expect announces a call of append to come, from a handler given ctx:
// the first partition of a fetch to announce itself also announces, for a
// while, those of the same fetch it does not see yet (the goroutines
// handling them may not have started).
func (m *merger) expect(ctx context.Context) *expected {
	return m.expectOf(kafkax.FetchPartitions(ctx))
}

// expectOf is expect for a partition of a fetch (key) handed over with
// n-1 others.
func (m *merger) expectOf(n int, key any) *expected {
	m.mu.Lock()
	m.coming++
	if key != nil {
		if key != m.fetch {
			wait := cmp.Or(m.wait, siblingWait)
			m.fetch, m.unseen, m.unseenUntil = key, n, time.Now().Add(wait)
			time.AfterFunc(wait, m.wake)
		}
		m.unseen = max(m.unseen-1, 0)
	}
	m.mu.Unlock()
	return &expected{m: m}
}

// wake hands the next write to the first call waiting, if it may start.
func (m *merger) wake() {
	m.mu.Lock()
	next := m.next()
	m.mu.Unlock()
	if next != nil {
		close(next.lead)
	}
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
	if m.busy || m.coming > 0 || len(m.queue) == 0 || m.unseen > 0 && time.Now().Before(m.unseenUntil) {
		return nil
	}
	m.busy = true
	return m.queue[0]
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
	m.busy = false
	next := m.next()
	m.mu.Unlock()
	if next != nil {
		close(next.lead)
	}
}
