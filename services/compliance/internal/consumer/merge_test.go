package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/compliance/internal/consumer"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/twmb/franz-go/pkg/kgo"
)

// gated holds its first append until opened, and records the accounts
// of every append.
type gated struct {
	l       *ledger.Ledger
	entered chan struct{} // closed once the first append waits
	open    chan struct{} // closed to let it go on

	mu    sync.Mutex
	calls [][]string
}

func (g *gated) AppendBatches(ctx context.Context, batches []ledger.Batch) ([][]ledger.Appended, error) {
	var accounts []string
	for _, b := range batches {
		accounts = append(accounts, b.Account)
	}
	g.mu.Lock()
	g.calls = append(g.calls, accounts)
	first := len(g.calls) == 1
	g.mu.Unlock()
	if first {
		close(g.entered)
		<-g.open
	}
	return g.l.AppendBatches(ctx, batches)
}

func (g *gated) appends() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// TestPartitionsHandledTogetherShareAWrite: the partitions of a fetch
// handled at the same time (kafkax.PartitionsAtOnce) that are ready while
// an append is under way go to the ledger together in the next one, not
// one append each; an event the log can never hold is parked by its own
// partition, and the others' events are all logged in order.
func TestPartitionsHandledTogetherShareAWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newDB(t)
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	g := &gated{l: l, entered: make(chan struct{}), open: make(chan struct{})}
	p := &parked{}
	cons := consumer.New(consumer.Config{Ledger: g, DeadLetter: p.park, Logger: logger}, prometheus.NewRegistry())

	const partitions, accountsEach, each = 6, 2, 5
	batches := make([][]*kgo.Record, partitions)
	want := map[string][]string{}
	var bad *kgo.Record
	for part := range int32(partitions) {
		var rs []*kgo.Record
		for i := range each {
			for a := range accountsEach {
				account := fmt.Sprintf("org_m%d%d", part, a)
				if part == 4 && a == 1 && i == 2 {
					bad, _ = optOut(t, "t", part, account, `"amount":1e400`)
					rs = append(rs, bad)
					continue
				}
				r, id := optOut(t, "t", part, account, "")
				rs = append(rs, r)
				want[account] = append(want[account], id)
			}
		}
		batches[part] = at(0, rs...)
	}

	errs := make(chan error, partitions)
	handle := func(part int) { errs <- cons.Handle(ctx, "t", int32(part), batches[part]) }
	go handle(0)
	<-g.entered
	for part := 1; part < partitions; part++ {
		go handle(part)
	}
	eventually(t, 10*time.Second, "the other partitions wait for the append under way, or append on their own", func() bool {
		return cons.Waiting() == partitions-1 || len(g.appends()) > 1
	})
	close(g.open)
	for range partitions {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	// The first alone; the five others together, then again without
	// the event that cannot be logged.
	calls := g.appends()
	if len(calls) != 3 || len(calls[1]) != (partitions-1)*accountsEach {
		t.Fatalf("appends: %v; want one of partition 0's accounts, then two of the %d accounts of the five others", calls, (partitions-1)*accountsEach)
	}
	if p.count() != 1 || p.records[0] != bad {
		t.Fatalf("parked %d records, want the unappendable one", p.count())
	}
	var unappendable *ledger.UnappendableError
	if !errors.As(p.reasons[0], &unappendable) {
		t.Fatalf("parked for %v", p.reasons[0])
	}
	for account, ids := range want {
		if got := logged(t, l, account); !slices.Equal(got, ids) {
			t.Fatalf("%s logged %v, want %v", account, got, ids)
		}
		if v, err := l.Verify(ctx, account); err != nil || !v.OK || v.TreeSize != int64(len(ids)) {
			t.Fatalf("verify %s: %+v %v", account, v, err)
		}
	}
}

// TestAFetchIsOneWrite: the batches of a fetch's partitions, prepared
// ahead and written at once (kafkax.ConsumeStaged, PartitionsAtOnce), go
// to the ledger in one append: the first ready does not go alone.
func TestAFetchIsOneWrite(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	open := make(chan struct{})
	close(open)
	g := &gated{l: l, entered: make(chan struct{}), open: open}
	cons := consumer.New(consumer.Config{Ledger: g, DeadLetter: (&parked{}).park, Logger: logger}, prometheus.NewRegistry())

	const partitions, each = 3, 4
	topic := kafkatest.NewTopic(t, partitions)
	want := map[string][]string{}
	var rs []*kgo.Record
	for part := range int32(partitions) {
		account := fmt.Sprintf("org_f%d", part)
		for range each {
			r, id := optOut(t, topic, part, account, "")
			rs = append(rs, r)
			want[account] = append(want[account], id)
		}
	}
	// Produced before the member starts: its first fetch holds them all.
	produce(t, rs...)
	group := "g-" + topic
	cl := kafkatest.Client(t, append(kafkax.GroupOpts(group, topic, "", 6*time.Second), kgo.RebalanceTimeout(30*time.Second))...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = kafkax.ConsumeStaged(ctx, cl, 100, cons.Stages(), logger, kafkax.PartitionsAtOnce(partitions))
	}()
	t.Cleanup(func() { cancel(); <-done })
	complete := func() bool {
		for account, ids := range want {
			if len(logged(t, l, account)) != len(ids) {
				return false
			}
		}
		return true
	}
	eventually(t, 20*time.Second, "every event logged", complete)
	if calls := g.appends(); len(calls) != 1 || len(calls[0]) != partitions {
		t.Fatalf("appends: %v; want one, of the %d accounts", calls, partitions)
	}
}
