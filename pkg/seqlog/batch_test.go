package seqlog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/seqlog"
)

// TestTwoWritersOfManyAccountsHintEach has two writers, as two instances
// owning different partitions, append fetches spread over many accounts
// at the same time, and wants every account's head hinted, promptly.
func TestTwoWritersOfManyAccountsHintEach(t *testing.T) {
	_, mk := newLog(t)
	const writers, accounts, rounds = 2, 90, 4
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var all []seqlog.Batch
	errs := make(chan error, writers)
	for w := range writers {
		l := mk()
		var mine [][]seqlog.Batch
		for r := range rounds {
			var batches []seqlog.Batch
			for a := range accounts {
				account := fmt.Sprintf("acct_%d_%03d", w, a)
				batches = append(batches, seqlog.Batch{Account: account, Items: items(account, fmt.Sprintf("e%d_%s", r, account))})
			}
			mine = append(mine, batches)
		}
		all = append(all, mine[0]...)
		go func() {
			for _, batches := range mine {
				if _, err := l.AppendBatches(ctx, batches); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("the writers took more than 30 s: %v", ctx.Err())
	}
	for _, b := range all {
		h, err := mk().HeadHint(context.Background(), b.Account)
		if err != nil {
			t.Fatal(err)
		}
		if h.Seq != rounds {
			t.Fatalf("hint of %s: seq %d, want %d", b.Account, h.Seq, rounds)
		}
	}
}
