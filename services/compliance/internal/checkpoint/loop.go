package checkpoint

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"
)

// Tree is the ledger's Merkle tree, as the signing loop reads it.
type Tree interface {
	// TreeHeads catches each account's tree up with its entries (at
	// least to the size of its last checkpoint) and returns its size and
	// root, and the consistency proof from that checkpoint's size; an
	// error that wraps ErrTreeInconsistent says the stored tree
	// contradicts the entries or what the process built.
	TreeHeads(ctx context.Context, qs []ledger.TreeQuery) []ledger.TreeHeadOf
	// ProveTree returns the consistency proof from size from to size to.
	ProveTree(ctx context.Context, account string, to, from int64) (tlog.TreeProof, error)
}

// ErrTreeInconsistent is the ledger's: a tree it refuses to serve.
var ErrTreeInconsistent = ledger.ErrTreeInconsistent

// PublishFunc publishes one account's checkpoint text.
type PublishFunc func(ctx context.Context, account string, text []byte) error

// Pace is how often the loop signs: at most one new checkpoint per
// account per Gap, and a tree that grew is looked at within Tick.
type Pace struct {
	Gap, Tick time.Duration
	// Retry is the first wait before a checkpoint that has not reached
	// every witness or the topic is delivered again; each failed attempt
	// doubles it, up to RetryMax.
	Retry, RetryMax time.Duration
}

// DefaultPace covers every entry within 2 s: an account appended to is
// signed at the next tick once a second has passed since its last. A
// checkpoint a witness or the broker did not take is offered again after
// 1 s, 2 s, 4 s… and then every minute until it is taken.
var DefaultPace = Pace{Gap: time.Second, Tick: 200 * time.Millisecond, Retry: time.Second, RetryMax: time.Minute}

// DefaultPublishTimeout bounds one attempt to publish a checkpoint.
const DefaultPublishTimeout = 10 * time.Second

// LoopConfig is what a Loop needs.
type LoopConfig struct {
	Key       *Key
	Tree      Tree
	Store     *Store
	Witnesses []*Witness
	// Client reaches the witnesses.
	Client *http.Client
	// Publish puts each account's latest checkpoint on the topic.
	Publish PublishFunc
	// Accounts lists every account with entries, looked at once at
	// start (an account whose tree is ahead of its last checkpoint, or
	// whose last checkpoint a witness or the topic has not taken yet).
	Accounts func(ctx context.Context) ([]string, error)
	Metrics  *Metrics
	Logger   *slog.Logger
	Pace     Pace
	// PublishTimeout bounds one attempt to publish a checkpoint.
	PublishTimeout time.Duration
	Now            func() time.Time
}

// Loop signs each account's tree as it grows and stores the checkpoint;
// beside it, it delivers each account's latest checkpoint: has the
// witnesses that have not cosigned it cosign it and publishes it, again
// and again with backoff until each witness cosigned or refused it and
// the topic took it with the cosignatures it has.
type Loop struct {
	cfg LoopConfig

	mu    sync.Mutex
	dirty map[string]bool
	last  map[string]time.Time // when each account was last looked at or signed
	wake  chan struct{}
	// owed are the accounts whose latest checkpoint is to be delivered.
	owed        map[string]*debt
	deliverWake chan struct{}
	witness     map[string]int64 // witness id + account → the size it holds
	missed      map[string]int64 // witness id + account → the size whose miss was counted
	refused     map[string]int64 // witness id + account → a size it refused for good
}

// debt is an account's latest checkpoint still to be delivered.
type debt struct {
	due  time.Time     // when to try next
	wait time.Duration // the wait after the next failed attempt
	// running says that an attempt is under way; again, that a new
	// checkpoint was stored meanwhile and is to be delivered at once.
	running, again bool
	// st is the latest checkpoint as signing just read or stored it,
	// for the next attempt to start from instead of reading it again;
	// nil once an attempt took it.
	st *stored
}

// NewLoop returns the loop of cfg.
func NewLoop(cfg LoopConfig) *Loop {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Pace.Gap == 0 || cfg.Pace.Tick == 0 {
		cfg.Pace.Gap, cfg.Pace.Tick = DefaultPace.Gap, DefaultPace.Tick
	}
	if cfg.Pace.Retry == 0 || cfg.Pace.RetryMax == 0 {
		cfg.Pace.Retry, cfg.Pace.RetryMax = DefaultPace.Retry, DefaultPace.RetryMax
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	for _, w := range cfg.Witnesses {
		cfg.Metrics.rejections.WithLabelValues(w.ID())
	}
	return &Loop{
		cfg: cfg, dirty: map[string]bool{}, last: map[string]time.Time{}, wake: make(chan struct{}, 1),
		owed: map[string]*debt{}, deliverWake: make(chan struct{}, 1),
		witness: map[string]int64{}, missed: map[string]int64{}, refused: map[string]int64{},
	}
}

// Notify tells the loop that accounts' logs grew.
func (l *Loop) Notify(accounts ...string) {
	if len(accounts) == 0 {
		return
	}
	l.mu.Lock()
	for _, a := range accounts {
		l.dirty[a] = true
	}
	l.mu.Unlock()
	poke(l.wake)
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// parallel bounds the batches of accounts delivered at once, and within
// one the accounts whose witnesses are asked, or whose checkpoints are
// published, at once.
const parallel = 8

// Run signs and delivers until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { l.signing(ctx) })
	wg.Go(func() { l.delivering(ctx) })
	wg.Wait()
	return nil
}

// signing signs the accounts that grew: all of them once at start, then
// those notified, in rounds that sign at most one a Tick. A notification
// while the loop is idle (no round signed anything within a Tick) is
// signed at once; those that come within a Tick of a round that signed
// wait for the next, which signs them together: a busy log, notified at
// every append, costs the store a round's few commands a Tick, not a
// round per append. Coverage stays Pace's: an account due waits at most
// a Tick, as it always could.
func (l *Loop) signing(ctx context.Context) {
	scanned := l.cfg.Accounts == nil
	t := time.NewTicker(l.cfg.Pace.Tick)
	defer t.Stop()
	var quiet time.Time // no round starts before: a Tick after the start of the last that signed
	for {
		if !scanned {
			accounts, err := l.cfg.Accounts(ctx)
			if err != nil {
				l.cfg.Logger.WarnContext(ctx, "listing the accounts to sign failed; retrying", slog.Any("err", err))
			} else {
				scanned = true
				l.Notify(accounts...)
			}
		}
		if wait := time.Until(quiet); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		started := time.Now()
		if l.round(ctx) {
			quiet = started.Add(l.cfg.Pace.Tick)
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-t.C:
		}
	}
}

// roundBatch bounds the accounts signed together (see signAll).
const roundBatch = 256

// round signs the accounts that grew and whose last look is a Gap old,
// roundBatch at a time, and reports whether there were any.
func (l *Loop) round(ctx context.Context) bool {
	now := l.cfg.Now()
	var due []string
	l.mu.Lock()
	for a := range l.dirty {
		if now.Sub(l.last[a]) >= l.cfg.Pace.Gap {
			due = append(due, a)
			delete(l.dirty, a)
			l.last[a] = now
		}
	}
	l.mu.Unlock()
	looked := len(due) > 0
	for len(due) > 0 {
		batch := due[:min(roundBatch, len(due))]
		due = due[len(batch):]
		for i, err := range l.signAll(ctx, batch) {
			if err != nil && ctx.Err() == nil {
				var inc *InconsistentError
				if !errors.As(err, &inc) {
					l.cfg.Logger.WarnContext(ctx, "checkpoint not signed; retrying", slog.String("account_id", batch[i]), slog.Any("err", err))
					l.Notify(batch[i])
				}
			}
		}
	}
	return looked
}

// owe puts account's latest checkpoint st up for delivery: at once when
// it is new (fresh), else when the account's backoff allows.
func (l *Loop) owe(account string, st *stored, fresh bool) {
	l.mu.Lock()
	d, ok := l.owed[account]
	switch {
	case !ok:
		l.owed[account] = &debt{wait: l.cfg.Pace.Retry, st: st}
	case fresh && d.running:
		d.again, d.st = true, st
	case fresh:
		d.due, d.st = time.Time{}, st
	}
	l.mu.Unlock()
	poke(l.deliverWake)
}

// delivering delivers the accounts owed whose time has come, in batches
// of up to roundBatch accounts (see deliverAll), at most parallel
// batches at once, until ctx ends; it returns once those under way are
// done.
func (l *Loop) delivering(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, parallel)
	t := time.NewTicker(l.cfg.Pace.Tick)
	defer t.Stop()
	for {
	batches:
		for ctx.Err() == nil {
			select {
			case slots <- struct{}{}:
			default:
				break batches
			}
			accounts, sts := l.take(l.cfg.Now(), roundBatch)
			if len(accounts) == 0 {
				<-slots
				break
			}
			wg.Go(func() {
				defer func() { <-slots }()
				for i, done := range l.deliverAll(ctx, accounts, sts) {
					l.settle(accounts[i], done)
				}
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-l.deliverWake:
		case <-t.C:
		}
	}
}

// take marks up to n of the accounts owed whose time has come (at now) as
// under way, and returns them with the checkpoints signing left them.
func (l *Loop) take(now time.Time, n int) ([]string, []*stored) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var accounts []string
	var sts []*stored
	for a, d := range l.owed {
		if len(accounts) == n {
			break
		}
		if d.running || now.Before(d.due) {
			continue
		}
		d.running = true
		accounts, sts = append(accounts, a), append(sts, d.st)
		d.st = nil
	}
	return accounts, sts
}

// deliverOwed makes one attempt to deliver account's latest checkpoint,
// if it is owed, as the delivering loop does, and reports whether it is
// done.
func (l *Loop) deliverOwed(ctx context.Context, account string) bool {
	l.mu.Lock()
	d, ok := l.owed[account]
	if !ok || d.running {
		l.mu.Unlock()
		return !ok
	}
	d.running = true
	st := d.st
	d.st = nil
	l.mu.Unlock()
	done := l.deliverAll(ctx, []string{account}, []*stored{st})[0]
	l.settle(account, done)
	return done
}

// settle records the outcome of an attempt to deliver account's latest
// checkpoint: done, or to be tried again after a longer wait.
func (l *Loop) settle(account string, done bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.owed[account]
	d.running = false
	switch {
	case d.again:
		d.again, d.due = false, time.Time{}
		poke(l.deliverWake)
	case done:
		delete(l.owed, account)
	default:
		d.due = l.cfg.Now().Add(d.wait)
		d.wait = min(2*d.wait, l.cfg.Pace.RetryMax)
	}
}

// InconsistentError says that an account's tree is not consistent with
// its last stored checkpoint: the log signs nothing for it.
type InconsistentError struct {
	Account        string
	LastSize, Size int64
	LastRoot, Root tlog.Hash
	Reason         string
}

func (e *InconsistentError) Error() string {
	return fmt.Sprintf("tree of %s at %d (%s) is not consistent with its checkpoint at %d (%s): %s",
		e.Account, e.Size, e.Root, e.LastSize, e.LastRoot, e.Reason)
}

// Sign signs account's tree if it grew since its last checkpoint: proves
// the tree consistent with that checkpoint (else an *InconsistentError,
// logged and counted, and nothing signed) and stores the new checkpoint.
// Either way the account's latest checkpoint is then delivered to the
// witnesses and the topic, in the background.
func (l *Loop) Sign(ctx context.Context, account string) error {
	return l.signAll(ctx, []string{account})[0]
}

// signAll signs each of accounts as Sign does, and returns each one's
// error. They go to the store together: their last checkpoints are read
// in one find (Store.latestAll), their trees' edges and proofs in
// another (Tree.TreeHeads, which reads no entry of an account whose head
// this process knows), and the new checkpoints stored in one insert
// (Store.putAll), so that a round of many accounts costs a few commands.
// Each account's checks are Sign's, on its own.
func (l *Loop) signAll(ctx context.Context, accounts []string) []error {
	errs := make([]error, len(accounts))
	var valid []string
	var at []int
	for i, a := range accounts {
		if !l.cfg.Key.ValidAccount(a) {
			l.cfg.Logger.WarnContext(ctx, "account id cannot name a checkpoint origin: not signed", slog.String("account_id", a))
			continue
		}
		valid, at = append(valid, a), append(at, i)
	}
	if len(valid) == 0 {
		return errs
	}
	// The last checkpoints first, then the trees: another replica may
	// store a checkpoint in between, but only of entries that are
	// durable, so the tree read after it is at least as large (and one
	// this process knows is taken only when it is not behind).
	lasts, err := l.cfg.Store.latestAll(ctx, valid)
	if err != nil {
		for _, i := range at {
			errs[i] = err
		}
		return errs
	}
	qs := make([]ledger.TreeQuery, len(valid))
	for k, a := range valid {
		qs[k] = ledger.TreeQuery{Account: a}
		if lasts[k] != nil {
			qs[k].From = lasts[k].Size
		}
	}
	start := l.cfg.Now()
	heads := l.cfg.Tree.TreeHeads(ctx, qs)
	took := l.cfg.Now().Sub(start)
	var (
		cps      []Checkpoint
		cpLasts  []*stored
		cpProofs []tlog.TreeProof
		cpAt     []int
	)
	for k, a := range valid {
		i, h, last := at[k], heads[k], lasts[k]
		if errors.Is(h.Err, ErrTreeInconsistent) {
			errs[i] = l.refuse(ctx, a, &InconsistentError{Account: a, Reason: h.Err.Error()})
			continue
		}
		if h.Err != nil || h.Size == 0 {
			errs[i] = h.Err
			continue
		}
		if last != nil && last.Size == h.Size && last.Root == h.Root {
			l.owe(a, last, false)
			continue
		}
		if last != nil {
			if err := l.check(a, last, h, took); err != nil {
				var inc *InconsistentError
				if errors.As(err, &inc) {
					err = l.refuse(ctx, a, inc)
				}
				errs[i] = err
				continue
			}
		}
		cp, err := l.cfg.Key.Sign(a, h.Size, h.Root)
		if err != nil {
			errs[i] = err
			continue
		}
		cps, cpLasts, cpProofs, cpAt = append(cps, cp), append(cpLasts, last), append(cpProofs, h.Proof), append(cpAt, i)
	}
	sts, perrs := l.cfg.Store.putAll(ctx, cps, cpLasts)
	var hinted []stored
	for j := range sts {
		if perrs[j] != nil {
			errs[cpAt[j]] = perrs[j]
			continue
		}
		st := sts[j]
		if last := cpLasts[j]; last != nil && st.fresh {
			// A witness that holds the last checkpoint is given this proof.
			st.proof, st.proofFrom = cpProofs[j], last.Size
		}
		hinted = append(hinted, st)
		// The Gap runs from the checkpoint stored, not from the look that
		// began it: stored checkpoints are a Gap apart however long it took.
		l.mu.Lock()
		l.last[st.Account] = l.cfg.Now()
		l.mu.Unlock()
		l.cfg.Metrics.signed.Inc()
		l.owe(st.Account, &st, true)
	}
	if l.cfg.Publish == nil {
		// Else the publication mark carries the hint.
		l.cfg.Store.hints(ctx, hinted)
	}
	return errs
}

// refuse counts and logs a tree the log does not sign.
func (l *Loop) refuse(ctx context.Context, account string, inc *InconsistentError) error {
	l.cfg.Metrics.consistencyFailures.Inc()
	l.cfg.Logger.ErrorContext(ctx, "compliance log tree inconsistent with its last checkpoint: not signed",
		slog.String("account_id", account), slog.Int64("checkpoint_size", inc.LastSize), slog.Int64("tree_size", inc.Size), slog.String("reason", inc.Reason))
	return inc
}

// check proves the tree head h consistent with the stored checkpoint
// last, whose root is the one the log signed, from the proof TreeHeads
// built (in took, observed as the proof's time).
func (l *Loop) check(account string, last *stored, h ledger.TreeHeadOf, took time.Duration) error {
	inc := &InconsistentError{Account: account, LastSize: last.Size, Size: h.Size, LastRoot: last.Root, Root: h.Root}
	switch {
	case h.Size < last.Size:
		inc.Reason = "the tree is smaller"
		return inc
	case h.Size == last.Size:
		inc.Reason = "another root at the same size"
		return inc
	}
	if h.ProofErr != nil && !errors.Is(h.ProofErr, ErrTreeInconsistent) {
		return h.ProofErr
	}
	l.cfg.Metrics.Proofs.WithLabelValues("consistency").Observe(took.Seconds())
	if h.ProofErr != nil {
		inc.Reason = h.ProofErr.Error()
		return inc
	}
	if err := tlog.CheckTree(h.Proof, h.Size, h.Root, last.Size, last.Root); err != nil {
		inc.Reason = err.Error()
		return inc
	}
	return nil
}

// deliverAll has each witness that has not cosigned the latest
// checkpoint of each of accounts cosign it, then publishes it unless it
// was published with as many cosignatures. It reports, per account,
// whether nothing is left to do: each witness cosigned or refused it for
// good, and the topic took it. sts[i], when not nil, is the latest as
// signing just read or stored it: a later one stored by another replica
// meanwhile is that replica's to deliver, and one this process just
// stored has no cosignature to read. The accounts' witnesses are asked in
// parallel; the cosignatures they give are then stored in one insert,
// and the publication marks in writes of up to hintChunk accounts, so
// that a batch costs the store a few writes, not two per account.
func (l *Loop) deliverAll(ctx context.Context, accounts []string, sts []*stored) []bool {
	type delivery struct {
		st    *stored
		lines map[string]string // witness id → cosignature line, stored
		got   map[string]string // the lines witnesses just gave
		done  bool              // no witness to ask again
		ok    bool              // prepared: st and lines are known
	}
	ds := make([]delivery, len(accounts))
	var g errgroup.Group
	g.SetLimit(parallel)
	for i, account := range accounts {
		g.Go(func() error {
			d := &ds[i]
			d.st = sts[i]
			if d.st == nil {
				st, found, err := l.cfg.Store.latest(ctx, account)
				if err != nil || !found {
					d.done = l.delivered(ctx, account, err)
					return nil
				}
				d.st = st
			}
			d.lines = map[string]string{}
			if !d.st.fresh {
				var err error
				if d.lines, err = l.cfg.Store.cosignatures(ctx, d.st.Checkpoint); err != nil {
					d.done = l.delivered(ctx, account, err)
					return nil
				}
			}
			d.ok = true
			d.got, d.done = l.collect(ctx, d.st, d.lines)
			return nil
		})
	}
	_ = g.Wait()
	var cosigs []cosignature
	var of []int // the delivery of each cosignature
	for i := range ds {
		for w, line := range ds[i].got {
			cosigs = append(cosigs, cosignature{cp: ds[i].st.Checkpoint, witness: w, line: line})
			of = append(of, i)
		}
	}
	for k, err := range l.cfg.Store.addCosignatures(ctx, cosigs) {
		d := &ds[of[k]]
		if err != nil {
			l.cfg.Logger.WarnContext(ctx, "cosignature not stored; retrying", slog.String("account_id", accounts[of[k]]), slog.Any("err", err))
			d.done = false
			continue
		}
		l.cfg.Metrics.cosignatures.Inc()
		d.lines[cosigs[k].witness] = cosigs[k].line
	}
	out := make([]bool, len(accounts))
	var pubs []publication
	var at []int
	for i, d := range ds {
		if !d.ok {
			out[i] = d.done
			continue
		}
		cp := d.st.Checkpoint
		for _, w := range l.cfg.Witnesses {
			if line, ok := d.lines[w.ID()]; ok {
				cp.Cosignatures = append(cp.Cosignatures, line)
			}
		}
		out[i] = d.done
		pubs, at = append(pubs, publication{seq: d.st.seq, cp: cp, fresh: d.st.fresh}), append(at, i)
	}
	for j, ok := range l.publishAll(ctx, pubs) {
		out[at[j]] = out[at[j]] && ok
	}
	return out
}

// delivered reports whether an attempt that ended with err is done, and
// logs err.
func (l *Loop) delivered(ctx context.Context, account string, err error) bool {
	if err != nil && ctx.Err() == nil {
		l.cfg.Logger.WarnContext(ctx, "checkpoint not delivered; retrying", slog.String("account_id", account), slog.Any("err", err))
	}
	return err == nil
}

// collect asks each witness without a line in lines (witness id →
// cosignature line) to cosign st, and returns the lines it gets, to be
// stored. It reports whether no witness is left to ask again.
func (l *Loop) collect(ctx context.Context, st *stored, lines map[string]string) (map[string]string, bool) {
	done := true
	got := map[string]string{}
	cp := st.Checkpoint
	for _, w := range l.cfg.Witnesses {
		key := w.ID() + " " + cp.Account
		l.mu.Lock()
		refused := l.refused[key] == cp.Size
		l.mu.Unlock()
		if _, ok := lines[w.ID()]; ok || refused {
			continue
		}
		line, err := l.cosign(ctx, w, st)
		switch {
		case errors.Is(err, errSuperseded):
		case err != nil && ctx.Err() != nil:
			return got, false
		case err != nil:
			done = l.miss(ctx, w, cp, err) && done
		default:
			got[w.ID()] = line
		}
	}
	return got, done
}

// miss counts and logs, once per checkpoint, that w did not cosign cp,
// and reports whether it refused it for good (an answer other than a
// server error): such a checkpoint is not offered to it again.
func (l *Loop) miss(ctx context.Context, w *Witness, cp Checkpoint, err error) bool {
	r, ok := IsRefusal(err)
	final := ok && (r.Status >= 400 && r.Status < 500 || r.Status == 0 && r.Reason == reasonBadCosignature)
	key := w.ID() + " " + cp.Account
	l.mu.Lock()
	first := l.missed[key] != cp.Size
	l.missed[key] = cp.Size
	if final {
		l.refused[key] = cp.Size
	}
	l.mu.Unlock()
	attrs := []any{slog.String("account_id", cp.Account), slog.Int64("size", cp.Size), slog.String("witness", w.URL), slog.Any("err", err)}
	if !first {
		l.cfg.Logger.WarnContext(ctx, "witness still did not cosign the checkpoint; retrying", attrs...)
		return final
	}
	l.cfg.Metrics.rejections.WithLabelValues(w.ID()).Inc()
	if !final {
		attrs = append(attrs, slog.Bool("retrying", true))
	}
	l.cfg.Logger.ErrorContext(ctx, "witness did not cosign the checkpoint", attrs...)
	return final
}

// errSuperseded says that a witness holds a later checkpoint of the
// account than the one offered, one the log stored: the later one is
// delivered in its turn.
var errSuperseded = errors.New("the witness holds a later checkpoint of the log")

// cosign has w cosign st. It tells the witness the size it is believed
// to hold (the last it cosigned, else the previous checkpoint's) and,
// when the witness answers 409 with another, goes on from that size.
func (l *Loop) cosign(ctx context.Context, w *Witness, st *stored) (string, error) {
	cp := st.Checkpoint
	key := w.ID() + " " + cp.Account
	l.mu.Lock()
	old, known := l.witness[key]
	l.mu.Unlock()
	switch {
	case known || st.seq == 1:
	case st.proofFrom > 0:
		old = st.proofFrom // the predecessor signing checked against
	default:
		prev, err := l.cfg.Store.get(ctx, cp.Account, st.seq-1)
		if err != nil {
			return "", err
		}
		if prev != nil {
			old = prev.Size
		}
	}
	for range 3 {
		if old > cp.Size {
			// A later checkpoint: the log's own, or a history it never
			// stored.
			if _, found, err := l.cfg.Store.BySize(ctx, cp.Account, old); err != nil || found {
				return "", cmp.Or(err, errSuperseded)
			}
			return "", &Refusal{Witness: w.ID(), Status: http.StatusConflict, Size: old,
				Reason: fmt.Sprintf("it holds a checkpoint of size %d the log never stored", old)}
		}
		line, err := l.addTo(ctx, w, st, old)
		r, ok := IsRefusal(err)
		if !ok || r.Status != http.StatusConflict || r.Size < 0 || r.Size == old {
			if err == nil {
				l.mu.Lock()
				l.witness[key] = cp.Size
				l.mu.Unlock()
			}
			return line, err
		}
		old = r.Size
		l.mu.Lock()
		l.witness[key] = old
		l.mu.Unlock()
	}
	return "", &Refusal{Witness: w.ID(), Status: http.StatusConflict, Size: old, Reason: "its latest size kept changing"}
}

// publication is a checkpoint to publish: number seq of its account,
// with the cosignatures collected; fresh says that this process has just
// stored it, so that nobody published it yet and its mark is not read.
type publication struct {
	seq   int64
	cp    Checkpoint
	fresh bool
}

// publishAll puts each of ps on the topic unless it is there already
// with as many cosignatures, in parallel, then marks those published in
// writes of up to hintChunk accounts, and reports, per publication,
// whether it is on the topic and marked so. A failed attempt is counted
// and retried by the caller.
func (l *Loop) publishAll(ctx context.Context, ps []publication) []bool {
	out := make([]bool, len(ps))
	if l.cfg.Publish == nil {
		for i := range out {
			out[i] = true
		}
		return out
	}
	sent := make([]bool, len(ps))
	var g errgroup.Group
	g.SetLimit(parallel)
	for i, p := range ps {
		g.Go(func() error {
			out[i], sent[i] = l.publish(ctx, p)
			return nil
		})
	}
	_ = g.Wait()
	var marks []mark
	var at []int
	for i, p := range ps {
		if sent[i] {
			marks = append(marks, mark{account: p.cp.Account, seq: p.seq, mark: publishMark(p.seq, len(p.cp.Cosignatures))})
			at = append(at, i)
		}
	}
	for j, err := range l.cfg.Store.markPublished(ctx, marks) {
		if err != nil {
			// Published again later: the topic is at least once.
			l.cfg.Logger.WarnContext(ctx, "checkpoint published but not marked so", slog.String("account_id", marks[j].account), slog.Any("err", err))
			continue
		}
		out[at[j]] = true
	}
	return out
}

// publish puts p on the topic unless its mark says it is there already
// with as many cosignatures. It reports whether it is there (done), and
// whether this call sent it (then it is still to be marked).
func (l *Loop) publish(ctx context.Context, p publication) (done, sent bool) {
	cp := p.cp
	if !p.fresh {
		published, err := l.cfg.Store.published(ctx, cp.Account)
		if err != nil {
			l.cfg.Logger.WarnContext(ctx, "checkpoint not published; retrying", slog.String("account_id", cp.Account), slog.Any("err", err))
			return false, false
		}
		if published >= publishMark(p.seq, len(cp.Cosignatures)) {
			return true, false
		}
	}
	pctx, cancel := context.WithTimeout(ctx, l.cfg.PublishTimeout)
	err := l.cfg.Publish(pctx, cp.Account, cp.Text())
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			l.cfg.Metrics.publishFailures.Inc()
			l.cfg.Logger.WarnContext(ctx, "checkpoint not published; retrying", slog.String("account_id", cp.Account),
				slog.Int64("size", cp.Size), slog.Any("err", err))
		}
		return false, false
	}
	l.cfg.Metrics.published.Inc()
	return false, true
}

// addTo offers st to w, which holds size old, with the proof from old:
// the one signing checked when it is from old, else one read now.
func (l *Loop) addTo(ctx context.Context, w *Witness, st *stored, old int64) (string, error) {
	cp := st.Checkpoint
	proof := st.proof
	if old > 0 && old < cp.Size && (proof == nil || st.proofFrom != old) {
		var err error
		if proof, err = l.cfg.Tree.ProveTree(ctx, cp.Account, cp.Size, old); err != nil {
			return "", err
		}
	}
	if old <= 0 || old >= cp.Size {
		proof = nil
	}
	return w.AddCheckpoint(ctx, l.cfg.Client, old, proof, cp.Note)
}

// Accounts returns the lister of every account with entries in db: the
// _ids of the ledger's head hints (collection heads).
func Accounts(heads *mongo.Collection) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		cur, err := heads.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
		if err != nil {
			return nil, mongox.Classify(err)
		}
		defer cur.Close(ctx)
		var out []string
		for cur.Next(ctx) {
			var d struct {
				ID string `bson:"_id"`
			}
			if err := cur.Decode(&d); err != nil {
				return nil, err
			}
			out = append(out, d.ID)
		}
		return out, mongox.Classify(cur.Err())
	}
}
