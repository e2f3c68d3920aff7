package consumer

import (
	"cmp"
	"context"
	"sync"
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// appendFunc appends decoded events, each account's in their order, and
// returns those the log can never hold, left out.
type appendFunc func(ctx context.Context, batch []kafkax.Decoded[events.Event]) ([]kafkax.Rejected, error)

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
// The partitions of a fetch are handed over together (see
// kafkax.FetchPartitions): the first to come waits, up to wait, for the
// others of its fetch before it writes, rather than write alone and make
// them wait for its write to make a second; the goroutines handling them
// start a few microseconds apart and decode for about a millisecond.
type merger struct {
	write appendFunc
	// wait bounds the first partition's wait for the others of its fetch
	// (siblingWait when 0): one the loop does not hand over after all.
	wait time.Duration

	mu    sync.Mutex
	queue []*mergeCall
	busy  bool // a write is under way
	// fetch is the key of the fetch whose partitions come, arrived how
	// many of them came, and all is closed once all have.
	fetch   any
	arrived int
	all     chan struct{}
}

// siblingWait is a merger's wait when none is set.
const siblingWait = 5 * time.Millisecond

type mergeCall struct {
	batch    []kafkax.Decoded[events.Event]
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
func (m *merger) append(ctx context.Context, batch []kafkax.Decoded[events.Event]) ([]kafkax.Rejected, error) {
	n, key := kafkax.FetchPartitions(ctx)
	return m.appendOf(ctx, batch, n, key)
}

// appendOf is append for a partition of a fetch (key) handed over with
// n-1 others.
func (m *merger) appendOf(ctx context.Context, batch []kafkax.Decoded[events.Event], n int, key any) ([]kafkax.Rejected, error) {
	c := &mergeCall{batch: batch, done: make(chan struct{}), lead: make(chan struct{})}
	m.mu.Lock()
	m.queue = append(m.queue, c)
	var all chan struct{}
	if key != nil {
		if key != m.fetch {
			m.fetch, m.arrived, m.all = key, 0, make(chan struct{})
		}
		if m.arrived++; m.arrived == n {
			close(m.all)
		}
		all = m.all
	}
	lead := !m.busy
	m.busy = true
	m.mu.Unlock()
	if lead {
		if all != nil {
			t := time.NewTimer(cmp.Or(m.wait, siblingWait))
			select {
			case <-all:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
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

// isBusy reports whether a write is under way or its lead waits.
func (m *merger) isBusy() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busy
}

// run makes one write of every call waiting, then hands the next write
// to the first call that came meanwhile, if any.
func (m *merger) run(ctx context.Context) {
	m.mu.Lock()
	calls := m.queue
	m.queue = nil
	m.mu.Unlock()
	var all []kafkax.Decoded[events.Event]
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
