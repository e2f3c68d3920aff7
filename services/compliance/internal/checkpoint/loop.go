package checkpoint

import (
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
	// TreeHead catches account's tree up with its entries and returns
	// its size and root; an error that wraps ErrTreeInconsistent says
	// the stored tree contradicts the entries or what the process built.
	TreeHead(ctx context.Context, account string) (int64, tlog.Hash, error)
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
}

// DefaultPace covers every entry within 2 s: an account appended to is
// signed at the next tick once a second has passed since its last.
var DefaultPace = Pace{Gap: time.Second, Tick: 200 * time.Millisecond}

// LoopConfig is what a Loop needs.
type LoopConfig struct {
	Key       *Key
	Tree      Tree
	Store     *Store
	Witnesses []*Witness
	// Client reaches the witnesses.
	Client *http.Client
	// Publish puts each new checkpoint on the topic.
	Publish PublishFunc
	// Accounts lists every account with entries, looked at once at
	// start (an account whose tree is ahead of its last checkpoint).
	Accounts func(ctx context.Context) ([]string, error)
	Metrics  *Metrics
	Logger   *slog.Logger
	Pace     Pace
	Now      func() time.Time
}

// Loop signs each account's tree as it grows, stores the checkpoint,
// has the witnesses cosign it, and publishes it.
type Loop struct {
	cfg LoopConfig

	mu      sync.Mutex
	dirty   map[string]bool
	last    map[string]time.Time // when each account was last looked at
	wake    chan struct{}
	witness map[string]int64 // witness id + account → the size it holds
}

// NewLoop returns the loop of cfg.
func NewLoop(cfg LoopConfig) *Loop {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Pace == (Pace{}) {
		cfg.Pace = DefaultPace
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	for _, w := range cfg.Witnesses {
		cfg.Metrics.rejections.WithLabelValues(w.ID())
	}
	return &Loop{cfg: cfg, dirty: map[string]bool{}, last: map[string]time.Time{}, wake: make(chan struct{}, 1), witness: map[string]int64{}}
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
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// parallel bounds the accounts signed at once.
const parallel = 8

// Run signs until ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	scanned := l.cfg.Accounts == nil
	t := time.NewTicker(l.cfg.Pace.Tick)
	defer t.Stop()
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
		l.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-l.wake:
		case <-t.C:
		}
	}
}

// round signs the accounts that grew and whose last look is a Gap old.
func (l *Loop) round(ctx context.Context) {
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
	g := errgroup.Group{}
	g.SetLimit(parallel)
	for _, a := range due {
		g.Go(func() error {
			if err := l.Sign(ctx, a); err != nil && ctx.Err() == nil {
				var inc *InconsistentError
				if !errors.As(err, &inc) {
					l.cfg.Logger.WarnContext(ctx, "checkpoint not signed; retrying", slog.String("account_id", a), slog.Any("err", err))
					l.Notify(a)
				}
			}
			return nil
		})
	}
	_ = g.Wait()
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
// logged and counted, and nothing signed), stores the new checkpoint,
// collects the witnesses' cosignatures and publishes it.
func (l *Loop) Sign(ctx context.Context, account string) error {
	if !l.cfg.Key.ValidAccount(account) {
		l.cfg.Logger.WarnContext(ctx, "account id cannot name a checkpoint origin: not signed", slog.String("account_id", account))
		return nil
	}
	size, root, err := l.cfg.Tree.TreeHead(ctx, account)
	if errors.Is(err, ErrTreeInconsistent) {
		return l.refuse(ctx, account, &InconsistentError{Account: account, Reason: err.Error()})
	}
	if err != nil || size == 0 {
		return err
	}
	last, found, err := l.cfg.Store.latest(ctx, account)
	if err != nil {
		return err
	}
	if found && last.Size == size && last.Root == root {
		return nil
	}
	if found {
		if err := l.check(ctx, account, last, size, root); err != nil {
			var inc *InconsistentError
			if errors.As(err, &inc) {
				return l.refuse(ctx, account, inc)
			}
			return err
		}
	}
	cp, err := l.cfg.Key.Sign(account, size, root)
	if err != nil {
		return err
	}
	st, err := l.cfg.Store.Put(ctx, cp, last)
	if err != nil {
		return err
	}
	l.cfg.Metrics.signed.Inc()
	cp = st.Checkpoint
	for _, w := range l.cfg.Witnesses {
		line, err := l.cosign(ctx, w, cp, last)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			l.cfg.Metrics.rejections.WithLabelValues(w.ID()).Inc()
			l.cfg.Logger.ErrorContext(ctx, "witness did not cosign the checkpoint", slog.String("account_id", account),
				slog.Int64("size", size), slog.String("witness", w.URL), slog.Any("err", err))
			continue
		}
		if err := l.cfg.Store.AddCosignature(ctx, cp, w.ID(), line); err != nil {
			return err
		}
		l.cfg.Metrics.cosignatures.Inc()
		cp.Cosignatures = append(cp.Cosignatures, line)
	}
	if l.cfg.Publish != nil {
		if err := l.cfg.Publish(ctx, account, cp.Text()); err != nil {
			l.cfg.Logger.ErrorContext(ctx, "checkpoint not published", slog.String("account_id", account), slog.Int64("size", size), slog.Any("err", err))
			return nil
		}
		l.cfg.Metrics.published.Inc()
	}
	return nil
}

// refuse counts and logs a tree the log does not sign.
func (l *Loop) refuse(ctx context.Context, account string, inc *InconsistentError) error {
	l.cfg.Metrics.consistencyFailures.Inc()
	l.cfg.Logger.ErrorContext(ctx, "compliance log tree inconsistent with its last checkpoint: not signed",
		slog.String("account_id", account), slog.Int64("checkpoint_size", inc.LastSize), slog.Int64("tree_size", inc.Size), slog.String("reason", inc.Reason))
	return inc
}

// check proves the tree of size with root consistent with the stored
// checkpoint last, whose root is the one the log signed.
func (l *Loop) check(ctx context.Context, account string, last *stored, size int64, root tlog.Hash) error {
	inc := &InconsistentError{Account: account, LastSize: last.Size, Size: size, LastRoot: last.Root, Root: root}
	switch {
	case size < last.Size:
		inc.Reason = "the tree is smaller"
		return inc
	case size == last.Size:
		inc.Reason = "another root at the same size"
		return inc
	}
	start := l.cfg.Now()
	proof, err := l.cfg.Tree.ProveTree(ctx, account, size, last.Size)
	if err != nil && !errors.Is(err, ErrTreeInconsistent) {
		return err
	}
	l.cfg.Metrics.Proofs.WithLabelValues("consistency").Observe(l.cfg.Now().Sub(start).Seconds())
	if errors.Is(err, ErrTreeInconsistent) {
		inc.Reason = err.Error()
		return inc
	}
	if err := tlog.CheckTree(proof, size, root, last.Size, last.Root); err != nil {
		inc.Reason = err.Error()
		return inc
	}
	return nil
}

// cosign has w cosign cp. It tells the witness the size it is believed
// to hold (the last it cosigned, else the previous checkpoint's) and, when
// the witness answers 409 with another, tries once more from that size.
func (l *Loop) cosign(ctx context.Context, w *Witness, cp Checkpoint, prev *stored) (string, error) {
	key := w.ID() + " " + cp.Account
	l.mu.Lock()
	old, known := l.witness[key]
	l.mu.Unlock()
	if !known && prev != nil {
		old = prev.Size
	}
	line, err := l.addTo(ctx, w, cp, old)
	if r, ok := IsRefusal(err); ok && r.Status == http.StatusConflict && r.Size >= 0 && r.Size != old {
		old = r.Size
		line, err = l.addTo(ctx, w, cp, old)
	}
	if err == nil {
		l.mu.Lock()
		l.witness[key] = cp.Size
		l.mu.Unlock()
	}
	return line, err
}

func (l *Loop) addTo(ctx context.Context, w *Witness, cp Checkpoint, old int64) (string, error) {
	var proof tlog.TreeProof
	if old > 0 && old < cp.Size {
		var err error
		if proof, err = l.cfg.Tree.ProveTree(ctx, cp.Account, cp.Size, old); err != nil {
			return "", err
		}
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
