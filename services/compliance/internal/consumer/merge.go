package consumer

import (
	"context"
	"sync"

	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// appendFunc appends decoded events, each account's in their order, and
// returns those the log can never hold, left out.
type appendFunc func(ctx context.Context, batch []kafkax.Decoded[event]) ([]kafkax.Rejected, error)

// merger makes the appends of partitions handled at the same time one
// ledger write: a partition's events that come while a write is under way
// wait for it, and then go with every other partition's that waited, in
// the same few inserts. The embedded store takes about as long for an
// insert of 100 documents as for one of 20, and makes inserts in parallel
// wait for each other: fewer, larger writes are what lowers the time a
// fetch takes. Only one write runs at a time, so that no two appends to
// an account ever run together in this process (the ledger's rule), even
// if two partitions held events of one account: the write groups the
// events by account, each partition's in offset order.
//
// A write also waits, before it starts, for the other writes of its fetch
// that the poll loop has under way (kafkax.WritesOf) to join it: prepared
// ahead (kafkax.ConsumeStaged), a fetch's partitions are ready at about
// the same time, and the first must not go alone. It waits for nothing
// else: a partition that is not under way (waiting to retry) is not
// waited for, and one under way either joins or returns.
type merger struct {
	write appendFunc

	mu      sync.Mutex
	queue   []*mergeCall
	busy    bool          // a write is under way
	arrived chan struct{} // closed and replaced when a call joins the queue
}

type mergeCall struct {
	batch    []kafkax.Decoded[event]
	rejected []kafkax.Rejected
	err      error
	done     chan struct{} // closed once rejected or err is set
	lead     chan struct{} // closed when this call is to make the next write
}

// append appends batch, with the batches of other calls waiting
// meanwhile, and returns the records of batch the write rejected; an
// error of the write is every call's. The write runs with the context of
// the call that makes it: one cancelled fails the others, which their
// partitions retry (what was written is then found a replay).
func (m *merger) append(ctx context.Context, batch []kafkax.Decoded[event]) ([]kafkax.Rejected, error) {
	c := &mergeCall{batch: batch, done: make(chan struct{}), lead: make(chan struct{})}
	m.mu.Lock()
	m.queue = append(m.queue, c)
	if m.arrived != nil {
		close(m.arrived)
	}
	m.arrived = make(chan struct{})
	lead := !m.busy
	m.busy = true
	m.mu.Unlock()
	if lead {
		m.run(ctx)
	}
	for {
		select {
		case <-c.done:
			return c.rejected, c.err
		case <-c.lead:
			m.run(ctx)
			c.lead = nil
		}
	}
}

// waiting returns how many calls wait for the write under way.
func (m *merger) waiting() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queue)
}

// run makes one write of every call waiting, then hands the next write
// to the first call that came meanwhile, if any.
func (m *merger) run(ctx context.Context) {
	m.gather(ctx)
	m.mu.Lock()
	calls := m.queue
	m.queue = nil
	m.mu.Unlock()
	var all []kafkax.Decoded[event]
	owner := map[*kgo.Record]*mergeCall{}
	for _, c := range calls {
		all = append(all, c.batch...)
		for _, d := range c.batch {
			owner[d.Record] = c
		}
	}
	rejected, err := m.write(ctx, all)
	for _, r := range rejected {
		if c := owner[r.Record]; c != nil {
			c.rejected = append(c.rejected, r)
		}
	}
	for _, c := range calls {
		if err != nil {
			c.rejected, c.err = nil, err
		}
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

// gather waits until every write of the leader's fetch under way
// (kafkax.WritesOf) is queued, or ctx is done. Only one fetch is handled
// at a time, so the calls queued are all of the leader's fetch.
func (m *merger) gather(ctx context.Context) {
	kafkax.WritesOf(ctx).Await(ctx, func() (int, <-chan struct{}) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.queue), m.arrived
	})
}
