package checkpoint

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/dev/tamper"
	"github.com/rcm-platform/rcm/dev/testenv"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/witness"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/rcm-platform/rcm/services/compliance/internal/tree"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/mod/sumdb/note"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var gen = ids.NewGenerator(time.Now)

// optOuts makes n valid opt_out events of account.
func optOuts(t *testing.T, account string, n int) []ledger.Event {
	t.Helper()
	campaign := gen.New(ids.CampaignPrefix)
	var out []ledger.Event
	for i := 0; i < n; i++ {
		f, active := false, true
		e := events.Event{
			EventID: gen.New(ids.EventPrefix), EventType: events.TypeOptOut, AccountID: account,
			DocumentID: "doc_1", CampaignID: campaign, Actor: events.Actor{Type: events.ActorUser, ID: "user_1", SessionID: "sess_1"},
			OccurredAt: events.FormatTime(time.Now()), Channel: "sms", Notes: fmt.Sprintf("request %d", i),
			Deactivated: &f, Active: &active, ActiveChannels: []string{"email"},
		}
		m, err := events.NewMessage(e, "")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ledger.Event{Event: e, Data: m.Data})
	}
	return out
}

// rig is a ledger, its checkpoint loop and one witness, over a fresh
// database and real loopback HTTP.
type rig struct {
	db         *mongo.Database
	led        *ledger.Ledger
	key        *Key
	store      *Store
	loop       *Loop
	reg        *prometheus.Registry
	witnessReg *prometheus.Registry
	witnessKey string
	witness    *witnessServer

	mu        sync.Mutex
	published []string
	stop      func() // stops the loop started (start)
}

// rigOptions change a rig from its defaults: a loop started at once,
// publishing to r.published, and a witness that is up.
type rigOptions struct {
	// publish replaces the recording publisher.
	publish PublishFunc
	// witnessDown starts the rig with its witness down.
	witnessDown bool
	// stopped leaves the loop to be started by r.start.
	stopped bool
	// monitor watches the commands the rig's store client sends.
	monitor *event.CommandMonitor
}

func newRig(t *testing.T, opts ...func(*rigOptions)) *rig {
	t.Helper()
	var o rigOptions
	for _, f := range opts {
		f(&o)
	}
	ctx := context.Background()
	r := &rig{reg: prometheus.NewRegistry(), witnessReg: prometheus.NewRegistry()}
	cl := mongotest.Client(t)
	if o.monitor != nil {
		cl = mongotest.MonitoredClient(t, o.monitor)
	}
	r.db = cl.Database(mongotest.NewDatabase(t))
	r.led = ledger.New(ledger.Config{DB: r.db, Now: time.Now})
	if err := r.led.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	r.key = NewKey(seed(t), "rcm.test/compliance")
	wk, err := witness.LoadOrCreateKey(t.TempDir(), "witness.test/w")
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.New(witness.Config{StateDir: t.TempDir(), Signer: wk.Signer, OriginPrefix: "rcm.test/compliance",
		LogKey: r.key.priv.Public().(ed25519.PublicKey), Registerer: r.witnessReg})
	if err != nil {
		t.Fatal(err)
	}
	r.witness = newWitnessServer(t, w.Handler(), !o.witnessDown)
	r.witnessKey = wk.VerifierKey
	witnesses, err := ParseWitnesses([]string{r.witness.URL() + "|" + wk.VerifierKey})
	if err != nil {
		t.Fatal(err)
	}
	r.store = NewStore(r.db, []string{witnesses[0].ID()}, time.Now)
	if err := r.store.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	publish := o.publish
	if publish == nil {
		publish = func(_ context.Context, _ string, text []byte) error {
			r.mu.Lock()
			r.published = append(r.published, string(text))
			r.mu.Unlock()
			return nil
		}
	}
	r.loop = NewLoop(LoopConfig{
		Key: r.key, Tree: r.led, Store: r.store, Witnesses: witnesses,
		Publish:  publish,
		Accounts: Accounts(r.db.Collection(auditlog.HeadsCollection)),
		Metrics:  NewMetrics(r.reg), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Pace:           testPace,
		PublishTimeout: time.Second,
	})
	if !o.stopped {
		r.start(t)
	}
	return r
}

// testPace is the production pace of signing with retries a few times
// quicker, so that a test sees several within a second or two.
var testPace = Pace{Gap: time.Second, Tick: 50 * time.Millisecond, Retry: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond}

// start runs r's loop until the test ends or r.stop.
func (r *rig) start(t *testing.T) {
	t.Helper()
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.loop.Run(runCtx); close(done) }()
	r.stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(r.stop)
}

// restartLoop stops r's loop and starts, in its place, that of a new
// process: a store and a loop that know nothing of any account, counted
// on a registry of their own (r.reg from then on).
func (r *rig) restartLoop(t *testing.T) {
	t.Helper()
	r.stop()
	cfg := r.loop.cfg
	r.store = NewStore(r.db, r.store.witnesses, time.Now)
	r.reg = prometheus.NewRegistry()
	cfg.Store, cfg.Metrics = r.store, NewMetrics(r.reg)
	r.loop = NewLoop(cfg)
	r.start(t)
}

// witnessServer serves a witness over loopback on an address that stays
// the same when it is stopped and started again, as an outage would.
type witnessServer struct {
	t       *testing.T
	addr    string
	handler http.Handler

	mu  sync.Mutex
	srv *httptest.Server
}

func newWitnessServer(t *testing.T, h http.Handler, up bool) *witnessServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ws := &witnessServer{t: t, addr: l.Addr().String(), handler: h}
	_ = l.Close()
	if up {
		ws.Start()
	}
	t.Cleanup(ws.Stop)
	return ws
}

// URL is the witness's submission prefix.
func (ws *witnessServer) URL() string { return "http://" + ws.addr }

// Start serves the witness again on its address.
func (ws *witnessServer) Start() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.srv != nil {
		return
	}
	l, err := net.Listen("tcp", ws.addr)
	if err != nil {
		ws.t.Fatalf("witness listen on %s: %v", ws.addr, err)
	}
	ws.srv = httptest.NewUnstartedServer(ws.handler)
	_ = ws.srv.Listener.Close()
	ws.srv.Listener = l
	ws.srv.Start()
}

// Stop closes the witness's listener and connections: it is unreachable.
func (ws *witnessServer) Stop() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.srv != nil {
		ws.srv.Close()
		ws.srv = nil
	}
}

func (r *rig) append(t *testing.T, account string, evs []ledger.Event) {
	t.Helper()
	if _, err := r.led.Append(context.Background(), account, evs); err != nil {
		t.Fatal(err)
	}
	r.loop.Notify(account)
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *rig) latest(t *testing.T, account string) Checkpoint {
	t.Helper()
	cp, _, err := r.store.Latest(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// TestEveryEntryCoveredWithinTwoSeconds: entries appended are covered by
// a stored, cosigned, published checkpoint within 2 s, at most one per
// second; the checkpoint verifies with x/mod's note package given the
// account's verifier key, and the witness's cosignature with its key.
func TestEveryEntryCoveredWithinTwoSeconds(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const account = "org_cover"
	evs := optOuts(t, account, 9)
	var signedAt []time.Time
	for i, n := range []int{3, 2, 4} {
		from := 0
		for _, m := range []int{3, 2, 4}[:i] {
			from += m
		}
		appended := time.Now()
		r.append(t, account, evs[from:from+n])
		waitFor(t, 2*time.Second, fmt.Sprintf("a checkpoint of size %d", from+n), func() bool {
			return r.latest(t, account).Size == int64(from+n)
		})
		signedAt = append(signedAt, time.Now())
		t.Logf("size %d covered after %v", from+n, time.Since(appended))
	}
	for i := 1; i < len(signedAt); i++ {
		if gap := signedAt[i].Sub(signedAt[i-1]); gap < 900*time.Millisecond {
			t.Errorf("checkpoints %d and %d %v apart, want at least a second", i, i+1, gap)
		}
	}
	// The cosignature is stored after the checkpoint it cosigns.
	waitFor(t, 2*time.Second, "the cosignature", func() bool { return len(r.latest(t, account).Cosignatures) == 1 })
	cp := r.latest(t, account)
	vkey, _ := r.key.VerifierKey(account)
	v, _ := note.NewVerifier(vkey)
	n, err := note.Open(cp.Text(), note.VerifierList(v))
	if err != nil {
		t.Fatalf("checkpoint does not verify with %s: %v\n%s", vkey, err, cp.Text())
	}
	_, root, _ := r.led.TreeHead(context.Background(), account)
	if want := fmt.Sprintf("rcm.test/compliance/%s\n9\n%s\n", account, root); n.Text != want {
		t.Errorf("checkpoint body %q, want %q", n.Text, want)
	}
	w := parseOne(t, "http://unused|"+r.witnessKey)
	if !w.verifies(cp.Note, cp.Cosignatures[0]) {
		t.Errorf("the cosignature %q does not verify with the witness key", cp.Cosignatures[0])
	}
	waitFor(t, 2*time.Second, "the third publication", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.published) == 3
	})
	r.mu.Lock()
	last := r.published[len(r.published)-1]
	count := len(r.published)
	r.mu.Unlock()
	if last != string(cp.Text()) || count != 3 {
		t.Errorf("published %d, the last %q; want 3, the last the stored checkpoint %q", count, last, cp.Text())
	}
	for name, want := range map[string]float64{
		"rcm_log_checkpoints_signed_total": 3, "rcm_log_checkpoints_published_total": 3, "rcm_log_cosignatures_total": 3,
	} {
		if got := counter(t, r.reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

var _ = testutil.ToFloat64

// rewrite does what whoever holds the database can (dev/tamper): edits
// entry seq of account, re-seals it and every later one up to head, and
// recomputes the stored tree over the rewritten entries. Another
// process's ledger then finds chain and tree intact: tamper writes the
// tree as the service does.
func rewrite(t *testing.T, db *mongo.Database, account string, seq, head int64) {
	t.Helper()
	ctx := context.Background()
	got, err := tamper.Rewrite(ctx, db, account, seq, func(e *auditlog.Entry) { e.Actor.ID = "user_someone_else" })
	if err != nil || got != head {
		t.Fatalf("rewrite: got head %d %v, want %d", got, err, head)
	}
	other := ledger.New(ledger.Config{DB: db, Now: time.Now})
	if size, _, err := other.TreeHead(ctx, account); err != nil || size != head {
		t.Fatalf("recomputed tree: got size %d %v, want %d", size, err, head)
	}
	if v, err := other.Verify(ctx, account); err != nil || !v.OK {
		t.Fatalf("the careful rewrite must verify on its own: got %+v %v", v, err)
	}
}

// TestTamperWritesWhatTheServiceStores: dev/tamper names the service's
// collections and keys the tree's records as the tree package does.
func TestTamperWritesWhatTheServiceStores(t *testing.T) {
	t.Parallel()
	for got, want := range map[string]string{
		tamper.TreeHashes:  tree.HashesCollection,
		tamper.Checkpoints: CheckpointsCollection, tamper.Cosignatures: CosignaturesCollection, tamper.CheckpointHeads: HeadsCollection,
	} {
		if got != want {
			t.Errorf("tamper writes %q, the service stores %q", got, want)
		}
	}
	for _, leaf := range []int64{0, 1, 6, 1000} {
		if got, want := tamper.RecordID("org_a", leaf), tree.NewRecord("org_a", leaf, nil).ID; got != want {
			t.Errorf("record of leaf %d: tamper writes %q, the tree %q", leaf, got, want)
		}
	}
}

// TestRewriteWithCheckpointsKeptIsNotSigned: a history rewritten the
// careful way, stored tree included, with the stored checkpoints left in
// place: the service signs nothing more, counts it, and keeps serving the
// last good checkpoint.
func TestRewriteWithCheckpointsKeptIsNotSigned(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const account = "org_rw_kept"
	evs := optOuts(t, account, 9)
	r.append(t, account, evs[:6])
	waitFor(t, 2*time.Second, "the cosigned checkpoint of 6", func() bool {
		cp := r.latest(t, account)
		return cp.Size == 6 && len(cp.Cosignatures) == 1
	})
	good := r.latest(t, account)

	rewrite(t, r.db, account, 3, 6)
	r.append(t, account, evs[6:])
	waitFor(t, 5*time.Second, "a consistency failure counted", func() bool {
		return counter(t, r.reg, "rcm_log_consistency_failures_total") >= 1
	})
	// Once more, after the running ledger has let go of what it built.
	before := counter(t, r.reg, "rcm_log_consistency_failures_total")
	r.loop.Notify(account)
	waitFor(t, 5*time.Second, "a second consistency failure counted", func() bool {
		return counter(t, r.reg, "rcm_log_consistency_failures_total") > before
	})
	if got := r.latest(t, account); got.Size != 6 || string(got.Text()) != string(good.Text()) {
		t.Fatalf("latest checkpoint after the rewrite: size %d\n%s\nwant the good one of 6\n%s", got.Size, got.Text(), good.Text())
	}
	if got := counter(t, r.reg, "rcm_log_checkpoints_signed_total"); got != 1 {
		t.Fatalf("signed %v checkpoints, want 1 (none after the rewrite)", got)
	}
	if ok, err := r.led.Consistent(context.Background(), account, good.Size, good.Root); err != nil || ok {
		t.Fatalf("the rewritten log consistent with the good checkpoint: %v %v, want false", ok, err)
	}
}

// TestRewriteWithCheckpointsDeletedIsRefused: the same rewrite with the
// account's stored checkpoints deleted too: the service that signed the
// earlier one refuses to sign (it checks the tree against the checkpoint
// it signed, not against the store), counted; a process that knows
// nothing of the account signs a checkpoint the witness refuses, counted
// on both sides; and the log is not consistent with the earlier
// checkpoint.
func TestRewriteWithCheckpointsDeletedIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const account = "org_rw_deleted"
	evs := optOuts(t, account, 9)
	r.append(t, account, evs[:6])
	waitFor(t, 2*time.Second, "the cosigned checkpoint of 6", func() bool {
		cp := r.latest(t, account)
		return cp.Size == 6 && len(cp.Cosignatures) == 1
	})
	good := r.latest(t, account)

	rewrite(t, r.db, account, 3, 6)
	if err := tamper.DeleteCheckpoints(ctx, r.db, account); err != nil {
		t.Fatal(err)
	}
	failures := counter(t, r.reg, "rcm_log_consistency_failures_total")
	r.append(t, account, evs[6:7])
	waitFor(t, 5*time.Second, "the service to refuse to sign", func() bool {
		r.loop.Notify(account)
		return counter(t, r.reg, "rcm_log_consistency_failures_total") > failures
	})
	if got := counter(t, r.reg, "rcm_log_checkpoints_signed_total"); got != 1 {
		t.Fatalf("signed %v checkpoints, want 1 (none after the rewrite)", got)
	}

	// A signer new to the account has only the store to go by.
	r.restartLoop(t)
	r.append(t, account, evs[7:])
	witnessRefused := func() float64 {
		return testutil.ToFloat64(witnessRejected(t, r.witnessReg, "inconsistent")) + testutil.ToFloat64(witnessRejected(t, r.witnessReg, "conflict"))
	}
	waitFor(t, 10*time.Second, "the witness to refuse", func() bool {
		r.loop.Notify(account) // the loop goes on trying as the account acts
		return counter(t, r.reg, "rcm_log_witness_rejections_total") >= 1 && witnessRefused() >= 1
	})
	if cp := r.latest(t, account); len(cp.Cosignatures) != 0 {
		t.Fatalf("the rewritten checkpoint carries cosignatures: %q", cp.Cosignatures)
	}
	if ok, err := r.led.Consistent(ctx, account, good.Size, good.Root); err != nil || ok {
		t.Fatalf("the rewritten log consistent with the earlier checkpoint: %v %v, want false", ok, err)
	}
}

// witnessRejected returns the witness's rejection counter of reason.
func witnessRejected(t *testing.T, reg *prometheus.Registry, reason string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rcm_witness_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("the witness has no rejection counter of reason %s", reason)
	return nil
}

// TestStartUpSignsWhatNoSignerSaw: entries appended while no signer ran
// (a restart, say) are covered by a checkpoint within 2 s of the signer
// starting, with nothing notified: the start-up scan finds the accounts
// whose tree is ahead of their last checkpoint.
func TestStartUpSignsWhatNoSignerSaw(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(o *rigOptions) { o.stopped = true })
	ctx := context.Background()
	sizes := map[string]int{"org_scan_a": 3, "org_scan_b": 5}
	for account, n := range sizes {
		if _, err := r.led.Append(ctx, account, optOuts(t, account, n)); err != nil {
			t.Fatal(err)
		}
	}
	// One account already had a checkpoint, and grew since.
	if err := r.loop.Sign(ctx, "org_scan_b"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.led.Append(ctx, "org_scan_b", optOuts(t, "org_scan_b", 2)); err != nil {
		t.Fatal(err)
	}
	sizes["org_scan_b"] += 2

	r.start(t)
	started := time.Now()
	waitFor(t, 2*time.Second, "checkpoints covering every entry appended without a signer", func() bool {
		for account, n := range sizes {
			if r.latest(t, account).Size != int64(n) {
				return false
			}
		}
		return true
	})
	t.Logf("covered %v after the signer started", time.Since(started))
}
