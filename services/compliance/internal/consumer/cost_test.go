package consumer_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/services/compliance/internal/consumer"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/event"
)

// TestAFetchCostsAFewStoreCommands: a partition fetch spread over many
// accounts is stored in a few commands, not four per account: its
// entries in ordered inserts of up to 100, its tree records in one
// insert, and the heads' and trees' size hints in a write of up to 16
// accounts each; no read once the heads are known. The raw baseline of
// the benchmark pays an insert of entries and one of tree records per
// account and 100 entries.
func TestAFetchCostsAFewStoreCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var writes, reads atomic.Int64
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		switch e.CommandName {
		case "insert", "update":
			writes.Add(1)
		case "find", "getMore", "aggregate":
			reads.Add(1)
		}
	}}
	cl := mongotest.MonitoredClient(t, monitor)
	db := cl.Database(mongotest.NewDatabase(t))
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	if err := l.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	cons := consumer.New(consumer.Config{Ledger: l, DeadLetter: (&parked{}).park, Logger: logger}, prometheus.NewRegistry())

	const accounts, each = 10, 10
	fetch := func(round int) []*kgo.Record {
		var rs []*kgo.Record
		for a := range accounts {
			for range each {
				r, _ := optOut(t, "t", 0, fmt.Sprintf("org_f%02d", a), "")
				rs = append(rs, r)
			}
		}
		return at(int64(round*accounts*each), rs...)
	}
	// The first fetch finds the heads (new accounts: a find of their
	// hints and one of their first entries, for all of them) and not
	// the trees (new accounts' are empty), and writes as much as the
	// next.
	if err := cons.Handle(ctx, "t", 0, fetch(0)); err != nil {
		t.Fatal(err)
	}
	if w, r := writes.Load(), reads.Load(); w > 4 || r > 2 {
		t.Fatalf("the first fetch of %d entries over %d new accounts cost %d store writes and %d reads, want at most 4 and 2",
			accounts*each, accounts, w, r)
	}
	const rounds = 3
	w0, r0 := writes.Load(), reads.Load()
	for round := 1; round <= rounds; round++ {
		if err := cons.Handle(ctx, "t", 0, fetch(round)); err != nil {
			t.Fatal(err)
		}
	}
	w, r := (writes.Load()-w0)/rounds, (reads.Load()-r0)/rounds
	// 100 entries: 1 insert of entries, 1 of tree records, 1 write of
	// head hints, 1 of tree size hints.
	t.Logf("a fetch of %d entries over %d accounts: %d store writes, %d reads", accounts*each, accounts, w, r)
	if w > 4 || r != 0 {
		t.Fatalf("a fetch of %d entries over %d accounts cost %d store writes and %d reads, want at most 4 and none",
			accounts*each, accounts, w, r)
	}
	for a := range accounts {
		account := fmt.Sprintf("org_f%02d", a)
		v, err := l.Verify(ctx, account)
		if err != nil || !v.OK || v.Entries != (rounds+1)*each || v.TreeSize != (rounds+1)*each {
			t.Fatalf("verify %s: %+v %v", account, v, err)
		}
	}
}
