package checkpoint

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/rcm-platform/rcm/services/compliance/internal/tree"
	"go.mongodb.org/mongo-driver/v2/event"
)

// commands counts the commands a client sends, by command and collection.
type commands struct {
	mu sync.Mutex
	n  map[string]int // "find checkpoints" → count
}

func (c *commands) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		switch e.CommandName {
		case "find", "insert", "update", "delete", "getMore", "aggregate":
		default:
			return
		}
		coll, _ := e.Command.Lookup(e.CommandName).StringValueOK()
		c.mu.Lock()
		c.n[e.CommandName+" "+coll]++
		c.mu.Unlock()
	}}
}

// take returns the counts since the last take and starts again.
func (c *commands) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.n
	c.n = map[string]int{}
	return out
}

// TestCheckpointStoreCost: once this process signed an account's
// checkpoint, signing the next and delivering it (one witness, the
// topic) costs the checkpoint store no find (the signer goes on from the
// one it signed: another writer's later one would take the number of the
// next, and the insert would say so), the insert of the checkpoint and
// of its cosignature, and one update (the publication mark, which
// carries the hint of the latest), and the tree one read (its edge and
// the consistency proof for the check and the witness, together); the
// entries, which this process appended, are not read. A process new to
// the account reads the hint and the latest: two finds.
func TestCheckpointStoreCost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &commands{n: map[string]int{}}
	r := newRig(t, func(o *rigOptions) { o.stopped, o.monitor = true, c.monitor() })
	const account, rounds = "org_cost", 8
	evs := optOuts(t, account, rounds+2)
	step := func(i int) {
		t.Helper()
		if _, err := r.led.Append(ctx, account, evs[i:i+1]); err != nil {
			t.Fatal(err)
		}
		c.take()
		if err := r.loop.Sign(ctx, account); err != nil {
			t.Fatal(err)
		}
		if !r.loop.deliverOwed(ctx, account) {
			t.Fatalf("checkpoint %d not delivered", i+1)
		}
	}
	step(0) // the first looks the account up
	total := map[string]int{}
	for i := 1; i <= rounds; i++ {
		step(i)
		for k, v := range c.take() {
			total[k] += v
		}
	}
	if got := r.latest(t, account); got.Size != rounds+1 || len(got.Cosignatures) != 1 {
		t.Fatalf("latest checkpoint: size %d with %d cosignatures, want %d with 1", got.Size, len(got.Cosignatures), rounds+1)
	}
	per := func(k string) float64 { return float64(total[k]) / rounds }
	t.Logf("store commands per checkpoint: %v", total)
	want := map[string]float64{
		"find " + CheckpointsCollection:      0,
		"find " + HeadsCollection:            0,
		"find " + CosignaturesCollection:     0,
		"insert " + CheckpointsCollection:    1,
		"insert " + CosignaturesCollection:   1,
		"update " + HeadsCollection:          1,
		"find " + tree.HashesCollection:      1,
		"find " + auditlog.EntriesCollection: 0,
		"find " + auditlog.HeadsCollection:   0,
	}
	for k, w := range want {
		if got := per(k); got > w {
			t.Errorf("%s: %.2f per checkpoint, want at most %v", k, got, w)
		}
	}

	// Another process, new to the account, signs the next.
	cfg := r.loop.cfg
	cfg.Store = NewStore(r.db, r.store.witnesses, time.Now)
	cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	r.loop = NewLoop(cfg)
	step(rounds + 1)
	got := c.take()
	t.Logf("store commands of the first checkpoint of a process: %v", got)
	finds := got["find "+CheckpointsCollection] + got["find "+HeadsCollection] + got["find "+CosignaturesCollection]
	if finds > 2 {
		t.Errorf("the first checkpoint of a process: %d finds of the checkpoint store, want at most 2 (the hint, the latest)", finds)
	}
	if cp := r.latest(t, account); cp.Size != rounds+2 || len(cp.Cosignatures) != 1 {
		t.Fatalf("latest checkpoint: size %d with %d cosignatures, want %d with 1", cp.Size, len(cp.Cosignatures), rounds+2)
	}
}

// TestBySizeReadsByID: the checkpoint of a size (the consistency route
// asks for two) is found by reading checkpoints by _id alone, a few
// queries however many the account has, never with a filter the store
// would answer by reading every checkpoint of every account.
func TestBySizeReadsByID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var (
		mu      sync.Mutex
		finds   int
		scanned []string
	)
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName != "find" {
			return
		}
		if coll, _ := e.Command.Lookup("find").StringValueOK(); coll != CheckpointsCollection {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		finds++
		filter, _ := e.Command.Lookup("filter").DocumentOK()
		if elems, _ := filter.Elements(); len(elems) != 1 || elems[0].Key() != "_id" {
			scanned = append(scanned, filter.String())
		}
	}}
	r := newRig(t, func(o *rigOptions) { o.stopped, o.monitor = true, monitor })
	const account, n = "org_bysize", 40
	evs := optOuts(t, account, n)
	for i := range n {
		if _, err := r.led.Append(ctx, account, evs[i:i+1]); err != nil {
			t.Fatal(err)
		}
		if err := r.loop.Sign(ctx, account); err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []int64{1, 2, 17, 39, 40, 41} {
		mu.Lock()
		finds = 0
		mu.Unlock()
		cp, found, err := r.store.BySize(ctx, account, size)
		if err != nil {
			t.Fatal(err)
		}
		if want := size <= n; found != want || (found && cp.Size != size) {
			t.Errorf("size %d: found %v (size %d), want found %v", size, found, cp.Size, want)
		}
		mu.Lock()
		if finds > 3 {
			t.Errorf("size %d: %d finds of checkpoints, want at most 3", size, finds)
		}
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(scanned) > 0 {
		t.Errorf("checkpoints read by a filter other than _id: %v", scanned)
	}
}

// TestASigningRoundCostsAFewStoreCommands: a round that signs many
// accounts at once, each grown since its checkpoint by an append of this
// process, reads none of their latest checkpoints (this process signed
// them), their trees' stored right edges and consistency proofs in one
// find, reads nothing of
// the entries (this process wrote them and knows their heads) and stores
// the new checkpoints in one insert, whatever the number of accounts;
// delivering them, each to the witness and the topic, stores their
// cosignatures in one insert and their publication marks in one write
// per 16 accounts.
func TestASigningRoundCostsAFewStoreCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := &commands{n: map[string]int{}}
	r := newRig(t, func(o *rigOptions) { o.stopped, o.monitor = true, c.monitor() })
	r.loop.cfg.Pace.Gap = time.Nanosecond // every account notified is due
	const n = 12
	var accounts []string
	evs := map[string][]ledger.Event{}
	for i := range n {
		a := fmt.Sprintf("org_round%02d", i)
		accounts = append(accounts, a)
		evs[a] = optOuts(t, a, 3+i%3)
	}
	grow := func(from, to int) {
		t.Helper()
		var bs []ledger.Batch
		for _, a := range accounts {
			bs = append(bs, ledger.Batch{Account: a, Events: evs[a][from:to]})
		}
		if _, err := r.led.AppendBatches(ctx, bs); err != nil {
			t.Fatal(err)
		}
	}
	round := func() (signing, delivery map[string]int) {
		t.Helper()
		c.take()
		r.loop.Notify(accounts...)
		r.loop.round(ctx)
		signing = c.take()
		owed, sts := r.loop.take(time.Now(), roundBatch)
		if len(owed) != n {
			t.Fatalf("%d accounts owed a delivery, want %d", len(owed), n)
		}
		for i, done := range r.loop.deliverAll(ctx, owed, sts) {
			r.loop.settle(owed[i], done)
			if !done {
				t.Fatalf("checkpoint of %s not delivered", owed[i])
			}
		}
		return signing, c.take()
	}
	grow(0, 1)
	round() // the first checkpoints, of accounts new to the store
	grow(1, 3)
	got, delivery := round()
	t.Logf("store commands of a round that signs %d accounts: %v; of their delivery: %v", n, got, delivery)
	for k, w := range map[string]int{
		"insert " + CosignaturesCollection: 1,
		"update " + HeadsCollection:        1,
		"find " + CheckpointsCollection:    0,
		"find " + CosignaturesCollection:   0,
		"find " + HeadsCollection:          0,
	} {
		if delivery[k] > w {
			t.Errorf("%s: %d delivering the checkpoints of %d accounts, want at most %d", k, delivery[k], n, w)
		}
	}
	want := map[string]int{
		"find " + CheckpointsCollection:      0,
		"find " + HeadsCollection:            0,
		"find " + auditlog.EntriesCollection: 0,
		"find " + auditlog.HeadsCollection:   0,
		"find " + tree.HashesCollection:      1,
		"insert " + CheckpointsCollection:    1,
	}
	for k, w := range want {
		if got[k] > w {
			t.Errorf("%s: %d in a round of %d accounts, want at most %d", k, got[k], n, w)
		}
	}
	for _, a := range accounts {
		if cp := r.latest(t, a); cp.Size != 3 || len(cp.Cosignatures) != 1 {
			t.Fatalf("latest checkpoint of %s: size %d with %d cosignatures, want 3 with 1", a, cp.Size, len(cp.Cosignatures))
		}
	}
}

// TestABusyLogIsSignedInARoundATick: while appends notify the loop one
// after another, faster than its Tick, the notified accounts gather into
// one signing round a Tick, not one round each; every account is still
// signed, each within the Tick after its Gap allows.
func TestABusyLogIsSignedInARoundATick(t *testing.T) {
	t.Parallel()
	c := &commands{n: map[string]int{}}
	r := newRig(t, func(o *rigOptions) { o.stopped, o.monitor = true, c.monitor() })
	r.loop.cfg.Pace.Gap = time.Nanosecond // every account notified is due
	const n, every = 40, 5 * time.Millisecond
	var accounts []string
	evs := map[string][]ledger.Event{}
	for i := range n {
		a := fmt.Sprintf("org_busy%02d", i)
		accounts = append(accounts, a)
		evs[a] = optOuts(t, a, 1)
	}
	r.start(t)
	c.take()
	began := time.Now()
	for _, a := range accounts {
		r.append(t, a, evs[a])
		time.Sleep(every)
	}
	took := time.Since(began)
	for _, a := range accounts {
		waitFor(t, 2*time.Second, "the checkpoint of "+a, func() bool { return r.latest(t, a).Size == 1 })
	}
	rounds := c.take()["insert "+CheckpointsCollection]
	limit := int(took/r.loop.cfg.Pace.Tick) + 2
	t.Logf("%d accounts notified one by one over %v (Tick %v): signed in %d rounds", n, took, r.loop.cfg.Pace.Tick, rounds)
	if rounds > limit {
		t.Errorf("%d signing rounds for %d notifications over %v, want at most %d (one a Tick)", rounds, n, took, limit)
	}
}

// TestAnIdleLoopSignsANotificationAtOnce: a loop that has signed nothing
// within a Tick (here a minute; it has only looked, at start) signs an
// account notified at once, not at its next Tick: the pacing of busy
// rounds does not delay a quiet log.
func TestAnIdleLoopSignsANotificationAtOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(o *rigOptions) { o.stopped = true })
	r.loop.cfg.Pace.Gap, r.loop.cfg.Pace.Tick = time.Nanosecond, time.Minute
	const account = "org_idle"
	r.start(t)
	time.Sleep(100 * time.Millisecond) // the look at start is over
	r.append(t, account, optOuts(t, account, 1))
	waitFor(t, 5*time.Second, "the checkpoint", func() bool { return r.latest(t, account).Size == 1 })
}
