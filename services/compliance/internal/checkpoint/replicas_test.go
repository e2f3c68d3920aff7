package checkpoint

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"go.mongodb.org/mongo-driver/v2/bson"
	"golang.org/x/mod/sumdb/note"
)

// TestTwoReplicasSignOneHistory: two compliance replicas, each with its
// own ledger, checkpoint store and loop over one database and one
// witness, append to one account concurrently and both sign it, far more
// often than production would. The stored checkpoints of the account are
// numbered 1…n without a gap, store each size once, verify with the
// account's key, and are all of one history: each root is, recomputed
// here with transparency-dev/merkle from the final entries, the root of
// the prefix of its size. Neither replica counts a witness refusal.
func TestTwoReplicasSignOneHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, func(o *rigOptions) { o.stopped = true })
	const account = "org_two_replicas"
	fast := Pace{Gap: 20 * time.Millisecond, Tick: 5 * time.Millisecond, Retry: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond}
	r.loop.cfg.Pace = fast

	second := prometheus.NewRegistry()
	otherLed := ledger.New(ledger.Config{DB: r.db, Now: time.Now})
	otherLoop := NewLoop(LoopConfig{
		Key: r.key, Tree: otherLed, Store: NewStore(r.db, r.store.witnesses, time.Now),
		Witnesses: r.loop.cfg.Witnesses, Publish: func(context.Context, string, []byte) error { return nil },
		Accounts: Accounts(r.db.Collection(auditlog.HeadsCollection)),
		Metrics:  NewMetrics(second), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Pace: fast, PublishTimeout: time.Second,
	})
	r.start(t)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = otherLoop.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// Each replica appends its own events, one or two at a time, and
	// tells both loops (the other learns of it from the entries).
	const perReplica = 30
	var wg sync.WaitGroup
	for i, led := range []*ledger.Ledger{r.led, otherLed} {
		evs := optOuts(t, account, perReplica)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < len(evs); {
				n := 1 + (i+j)%2
				if j+n > len(evs) {
					n = len(evs) - j
				}
				if _, err := led.Append(ctx, account, evs[j:j+n]); err != nil {
					t.Error(err)
					return
				}
				j += n
				r.loop.Notify(account)
				otherLoop.Notify(account)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const total = 2 * perReplica
	waitFor(t, 3*time.Second, "a checkpoint of every entry", func() bool { return r.latest(t, account).Size == total })

	// Every stored checkpoint of the account, in number order.
	cur, err := r.db.Collection(CheckpointsCollection).Find(ctx, bson.D{{Key: "accountId", Value: account}})
	if err != nil {
		t.Fatal(err)
	}
	var docs []doc
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	bySeq := map[int64]doc{}
	sizes := map[int64]int64{}
	for _, d := range docs {
		if _, dup := bySeq[d.Seq]; dup {
			t.Fatalf("checkpoint number %d stored twice", d.Seq)
		}
		bySeq[d.Seq] = d
		if s, dup := sizes[d.Size]; dup {
			t.Fatalf("size %d stored twice: checkpoints %d and %d", d.Size, s, d.Seq)
		}
		sizes[d.Size] = d.Seq
	}
	t.Logf("%d checkpoints of %d entries", len(docs), total)
	if len(docs) < 3 {
		t.Fatalf("only %d checkpoints: the replicas did not sign concurrently enough to test anything", len(docs))
	}

	// The roots of every prefix of the final log, computed independently.
	roots := make([][]byte, total+1)
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	cr := rf.NewEmptyRange(0)
	for seq := int64(1); seq <= total; seq++ {
		data, found, err := otherLed.LeafData(ctx, account, seq)
		if err != nil || !found {
			t.Fatalf("leaf data of %d: %v %v", seq, found, err)
		}
		if err := cr.Append(rfc6962.DefaultHasher.HashLeaf(data), nil); err != nil {
			t.Fatal(err)
		}
		if roots[seq], err = cr.GetRootHash(nil); err != nil {
			t.Fatal(err)
		}
	}
	vkey, _ := r.key.VerifierKey(account)
	v, _ := note.NewVerifier(vkey)
	prevSize := int64(0)
	for seq := int64(1); seq <= int64(len(docs)); seq++ {
		d, ok := bySeq[seq]
		if !ok {
			t.Fatalf("no checkpoint number %d of %d", seq, len(docs))
		}
		if _, err := note.Open([]byte(d.Note), note.VerifierList(v)); err != nil {
			t.Fatalf("checkpoint %d does not verify: %v", seq, err)
		}
		size, root, err := r.key.Open(account, []byte(d.Note))
		if err != nil || size != d.Size {
			t.Fatalf("checkpoint %d: size %d %v, stored as %d", seq, size, err, d.Size)
		}
		if size <= prevSize {
			t.Fatalf("checkpoint %d of size %d after one of size %d", seq, size, prevSize)
		}
		if !bytes.Equal(root[:], roots[size]) {
			t.Fatalf("checkpoint %d of size %d has root %s, not the root of the log's first %d entries", seq, size, root, size)
		}
		prevSize = size
	}
	for name, reg := range map[string]*prometheus.Registry{"first": r.reg, "second": second} {
		if n := counter(t, reg, "rcm_log_witness_rejections_total"); n != 0 {
			t.Errorf("the %s replica counted %v witness refusals", name, n)
		}
		if n := counter(t, reg, "rcm_log_consistency_failures_total"); n != 0 {
			t.Errorf("the %s replica counted %v consistency failures", name, n)
		}
	}
}
