package kafkax

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/trace"
)

// BatchHandler processes the records fetched from one partition, in offset
// order. It returns nil only once the batch is durably processed; an error
// means "not yet" (a transient failure: a store or broker that did not
// answer) and the same records are offered again after a pause. A record
// that can never be processed is the handler's to dead-letter: returning
// an error for it would offer it again and again.
type BatchHandler func(ctx context.Context, topic string, partition int32, records []*kgo.Record) error

// ConsumeLoop is the poll loop of a consumer-group client created with
// GroupOpts (manual commits, kgo.BlockRebalanceOnPoll). For each fetch it
// hands every partition's batch to handle, retrying a failed batch with
// backoff, and commits the offsets of what was handled: offsets are
// committed only after the work is durable, and a partition cannot move
// to another member in the middle of a batch.
//
// The commit does not hold up the next fetch: it is sent asynchronously
// (franz-go sends commits one at a time, in the order they were made),
// and the loop polls and handles the next records while it is in flight,
// rebalances still blocked. Rebalancing is allowed again only once no
// commit is in flight: when the commit was answered before the next poll,
// or, if a rebalance waits (kgo.OnPartitionsCallbackBlocked) during that
// poll or that fetch's handling, after waiting for it; a partition is
// thus never revoked, nor the loop left, with its offsets still on the
// way.
//
// Retries are bounded by rebalances: once a rebalance waits for this loop,
// a failing batch is not tried again, nor are the partitions not handled
// yet; the loop commits what was handled, moves the consume position of
// every other partition of the fetch back to its first unhandled record,
// and allows the rebalance. A partition that stays with this member is
// then fetched again from that record, one that moves is read by its new
// owner from the committed offset: nothing is skipped, and no record
// holds a rebalance longer than firstAttemptGrace (plus the commit in
// flight). It returns when ctx is done, after committing what was
// handled.
//
// The partitions of a fetch are handled one after another, unless
// PartitionsAtOnce says how many may be handled at the same time: then
// handle must be safe to call concurrently for different partitions (it
// is never called concurrently for one). Either way the offsets of a
// fetch are committed once all of its partitions are done or given up.
func ConsumeLoop(ctx context.Context, cl *kgo.Client, maxRecords int, handle BatchHandler, logger *slog.Logger, opts ...LoopOption) error {
	write := func(ctx context.Context, topic string, partition int32, records []*kgo.Record, _ any) error {
		return handle(ctx, topic, partition, records)
	}
	return consume(ctx, cl, maxRecords, Stages{Write: write}, logger, opts)
}

// Stages is a batch handler in two stages, for ConsumeStaged.
//
// Prepare is the pure CPU work of a batch (decoding, validating): it may
// depend on nothing but the records, not on anything an earlier batch's
// Write changes, for it runs while the fetch before it is still being
// written, and what it made is dropped, unused, when its batch is given up
// (the records are then fetched again and prepared afresh). It cannot
// fail: what it finds wrong with a record is for Write to deal with (to
// dead-letter it, in order). It is never called concurrently with itself.
//
// Write is a BatchHandler given what Prepare made of the batch, with the
// same duties: it is called for a partition's batches in offset order,
// each only once the batch before it is written, and retried with the
// same prepared value after an error (so it must not change it).
type Stages struct {
	Prepare func(topic string, partition int32, records []*kgo.Record) any
	Write   func(ctx context.Context, topic string, partition int32, records []*kgo.Record, prepared any) error
}

// ConsumeStaged is ConsumeLoop of a handler in two stages: while a fetch
// is being written, the loop polls the next one and prepares its batches,
// so that the CPU work of one fetch overlaps the store work of the one
// before. Every guarantee of ConsumeLoop holds: offsets are committed only
// after Write returned nil, in order; a fetch is written only once the
// one before it is done; and the fetch held ahead keeps rebalances blocked
// as the one being written does: when a rebalance waits, or the loop is
// stopped, the fetch held ahead is dropped with the unhandled batches of
// the current one, and the consume position of each of its partitions is
// moved back to its first unwritten record before the rebalance is
// allowed.
func ConsumeStaged(ctx context.Context, cl *kgo.Client, maxRecords int, s Stages, logger *slog.Logger, opts ...LoopOption) error {
	return consume(ctx, cl, maxRecords, s, logger, opts)
}

// consume is ConsumeLoop and ConsumeStaged: it polls ahead only when
// s.Prepare is set.
func consume(ctx context.Context, cl *kgo.Client, maxRecords int, s Stages, logger *slog.Logger, opts []LoopOption) error {
	cfg := loopConfig{atOnce: 1}
	for _, o := range opts {
		o(&cfg)
	}
	gate := &rebalanceGate{waiting: make(chan struct{})}
	gates.Store(cl, gate)
	defer gates.Delete(cl)
	var (
		blocked  bool           // polled since the last AllowRebalance
		inFlight *pendingCommit // the last commit sent, nil once answered
		ahead    chan *fetch    // the poll of the next fetch, while one is written
	)
	// allow waits for the commit in flight, then lets a rebalance run.
	allow := func() {
		inFlight.wait()
		inFlight = nil
		gate.reset()
		cl.AllowRebalance()
		blocked = false
	}
	for {
		var f *fetch
		if ahead != nil {
			f = <-ahead
			ahead = nil
		} else {
			if blocked && inFlight.answered() {
				allow()
			}
			f = pollFetch(ctx, cl, maxRecords, gate, blocked, s.Prepare)
		}
		blocked = true
		if f.closed || ctx.Err() != nil {
			f.settle()
			allow()
			return nil
		}
		if f.byGate && len(f.parts) == 0 {
			// A rebalance waits while the last commit is in flight.
			allow()
			continue
		}
		f.fetches.EachError(func(topic string, partition int32, err error) {
			if f.byGate && errors.Is(err, context.Canceled) {
				return
			}
			logger.Warn("fetch error", slog.String("topic", topic), slog.Int("partition", int(partition)), slog.Any("err", err))
		})
		if s.Prepare != nil && !gate.isWaiting() {
			// Rebalances stay blocked: the next fetch's partitions
			// cannot move while it is held.
			ahead = make(chan *fetch, 1)
			go func() { ahead <- pollFetch(ctx, cl, maxRecords, gate, true, s.Prepare) }()
		}
		handled := make([]bool, len(f.parts))
		var wg sync.WaitGroup
		sem := make(chan struct{}, cfg.atOnce)
		peers := newWrites()
		for i, p := range f.parts {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			// Counted before its goroutine starts, so that a write of
			// the fetch already under way sees it coming.
			peers.add(1)
			wg.Go(func() {
				defer func() { <-sem }()
				counted := true
				defer func() {
					if counted {
						peers.add(-1)
					}
				}()
				if !f.wait(ctx, i) {
					return
				}
				write := func(ctx context.Context, topic string, partition int32, records []*kgo.Record) error {
					if !counted {
						peers.add(1) // a retry
						counted = true
					}
					defer func() { peers.add(-1); counted = false }()
					return s.Write(context.WithValue(ctx, writesKey{}, peers), topic, partition, records, f.prepared[i])
				}
				handled[i] = !gate.isWaiting() && ctx.Err() == nil &&
					handleWithRetry(ctx, p.Topic, p.Partition, p.Records, write, gate, logger)
			})
		}
		wg.Wait()
		done := map[string]map[int32]kgo.EpochOffset{}
		rewind := map[string]map[int32]kgo.EpochOffset{}
		for i, p := range f.parts {
			if handled[i] {
				last := p.Records[len(p.Records)-1]
				if done[p.Topic] == nil {
					done[p.Topic] = map[int32]kgo.EpochOffset{}
				}
				done[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: last.Offset + 1}
				continue
			}
			if ctx.Err() != nil {
				continue
			}
			rewindTo(rewind, p)
		}
		if len(done) > 0 {
			// Sent even while shutting down: the work is done. It
			// follows the commit before it, if that is still in flight.
			inFlight = commitAsync(ctx, cl, done, logger)
		}
		giveUp := len(rewind) > 0 || gate.isWaiting() || ctx.Err() != nil
		if giveUp && ahead != nil {
			// Its poll ends at once: a rebalance waits, or ctx is done.
			next := <-ahead
			ahead = nil
			next.settle()
			if ctx.Err() == nil {
				for _, p := range next.parts {
					rewindTo(rewind, p)
				}
			}
		}
		if len(rewind) > 0 {
			// Before AllowRebalance, while no revoke can run.
			cl.SetOffsets(rewind)
			logger.Warn("a rebalance is waiting: unhandled records will be fetched again", slog.Any("from", rewind))
		}
		if giveUp {
			allow()
		}
	}
}

// Writes counts the writes of one fetch's batches under way at the same
// time (kafkax.PartitionsAtOnce): a batch is counted from when the loop
// starts it until its attempt returns (while it waits for its
// preparation, or parks records, too), and again for each retry, but not
// while it waits to retry. A Merger, which makes the writes of partitions
// one, waits with it for those under way, rather than writing the first
// ready alone.
type Writes struct {
	mu      sync.Mutex
	n       int
	changed chan struct{}
}

type writesKey struct{}

// WritesOf returns the Writes of the fetch whose batch a Write of
// ConsumeLoop or ConsumeStaged is given ctx for; nil for any other ctx.
func WritesOf(ctx context.Context) *Writes {
	w, _ := ctx.Value(writesKey{}).(*Writes)
	return w
}

func newWrites() *Writes { return &Writes{changed: make(chan struct{})} }

// UnderWay returns how many writes of the fetch are under way, and a
// channel closed when that number changes.
func (w *Writes) UnderWay() (int, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.changed
}

// Await waits until queued reports at least as many calls as there are
// writes of the fetch under way, or ctx is done: queued returns how many
// calls a merging handler holds and a channel closed when one more comes.
// A write under way either comes or returns, and a retry that waits is
// not under way, so Await never waits for one that will not come. On a
// nil Writes (a ctx not from the loop) it returns at once.
func (w *Writes) Await(ctx context.Context, queued func() (int, <-chan struct{})) {
	if w == nil {
		return
	}
	for {
		under, changed := w.UnderWay()
		n, more := queued()
		if n >= under {
			return
		}
		select {
		case <-changed:
		case <-more:
		case <-ctx.Done():
			return
		}
	}
}

func (w *Writes) add(d int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n += d
	close(w.changed)
	w.changed = make(chan struct{})
}

// rewindTo sets in rewind the first record of p as the position its
// partition is to be fetched again from, unless an earlier record of the
// partition is there already.
func rewindTo(rewind map[string]map[int32]kgo.EpochOffset, p kgo.FetchTopicPartition) {
	if rewind[p.Topic] == nil {
		rewind[p.Topic] = map[int32]kgo.EpochOffset{}
	}
	if _, ok := rewind[p.Topic][p.Partition]; ok {
		return
	}
	// Epoch -1: no data-loss check against the leader epoch, as
	// franz-go advises when moving a position by hand.
	rewind[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: -1, Offset: p.Records[0].Offset}
}

// fetch is one poll's records, by partition, and what prepare made of
// each partition's batch.
type fetch struct {
	fetches kgo.Fetches
	closed  bool // the client is closed or ctx done
	byGate  bool // the poll ended because a rebalance waits
	parts   []kgo.FetchTopicPartition
	// prepared[i] is what prepare made of parts[i], set before ready[i]
	// is closed; nil without prepare.
	prepared []any
	ready    []chan struct{}
}

// pollFetch polls (see poll) and starts preparing the batches of what it
// got, one partition after another in the order of the fetch, if prepare
// is set.
func pollFetch(ctx context.Context, cl *kgo.Client, maxRecords int, gate *rebalanceGate, blocked bool, prepare func(string, int32, []*kgo.Record) any) *fetch {
	fetches, byGate := poll(ctx, cl, maxRecords, gate, blocked)
	f := &fetch{fetches: fetches, byGate: byGate, closed: fetches.IsClientClosed() || ctx.Err() != nil}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) > 0 {
			f.parts = append(f.parts, p)
		}
	})
	f.prepared = make([]any, len(f.parts))
	f.ready = make([]chan struct{}, len(f.parts))
	for i := range f.ready {
		f.ready[i] = make(chan struct{})
	}
	if prepare == nil || f.closed {
		for _, r := range f.ready {
			close(r)
		}
		return f
	}
	go func() {
		for i, p := range f.parts {
			f.prepared[i] = prepare(p.Topic, p.Partition, p.Records)
			close(f.ready[i])
		}
	}()
	return f
}

// wait waits until the batch of part i is prepared, or ctx is done.
func (f *fetch) wait(ctx context.Context, i int) bool {
	select {
	case <-f.ready[i]:
		return true
	case <-ctx.Done():
		return false
	}
}

// settle waits for the preparation of a fetch that is dropped, so that
// none goes on once the loop has returned (it is CPU work, bounded).
func (f *fetch) settle() {
	for _, r := range f.ready {
		<-r
	}
}

// poll polls records. While rebalances are still blocked by the previous
// poll (its commit in flight), the poll also ends, reporting byGate, when
// a rebalance starts waiting: the loop must then let it run rather than
// wait for records that may not come.
func poll(ctx context.Context, cl *kgo.Client, maxRecords int, gate *rebalanceGate, blocked bool) (_ kgo.Fetches, byGate bool) {
	if !blocked {
		return cl.PollRecords(ctx, maxRecords), false
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-gate.wait():
			cancel()
		case <-pctx.Done():
		}
	}()
	fetches := cl.PollRecords(pctx, maxRecords)
	return fetches, pctx.Err() != nil && ctx.Err() == nil && gate.isWaiting()
}

// pendingCommit is a commit sent with CommitOffsets: answered is closed
// once its onDone has run.
type pendingCommit struct{ done chan struct{} }

// commitAsync sends offsets and returns at once; a failed commit is
// logged: its records are redelivered (and deduplicated by the handlers)
// if their partition moves before a later commit covers them.
func commitAsync(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset, logger *slog.Logger) *pendingCommit {
	c := &pendingCommit{done: make(chan struct{})}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	cl.CommitOffsets(cctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		defer close(c.done)
		defer cancel()
		if err == nil && resp != nil {
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if err == nil {
						err = kerr.ErrorForCode(p.ErrorCode)
					}
				}
			}
		}
		if err != nil {
			logger.Warn("commit failed; the records will be redelivered and deduplicated", slog.Any("err", err))
		}
	})
	return c
}

// answered reports whether the commit has been answered (a nil commit
// has).
func (c *pendingCommit) answered() bool {
	if c == nil {
		return true
	}
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits for the commit to be answered (a commit is bounded by its
// timeout).
func (c *pendingCommit) wait() {
	if c != nil {
		<-c.done
	}
}

// LoopOption changes how ConsumeLoop handles a fetch.
type LoopOption func(*loopConfig)

type loopConfig struct{ atOnce int }

// PartitionsAtOnce lets ConsumeLoop handle up to n partitions of a fetch
// at the same time (1, one after another, when not given), so that one
// partition's store and broker round trips do not wait for another's.
func PartitionsAtOnce(n int) LoopOption {
	return func(c *loopConfig) { c.atOnce = max(n, 1) }
}

// handleWithRetry reports whether records are handled: it retries a failed
// batch with backoff until it succeeds, ctx ends, or a rebalance waits. An
// attempt in flight when a rebalance starts waiting is cancelled: a first
// attempt after firstAttemptGrace (a healthy batch is done by then), a
// retry at once.
func handleWithRetry(ctx context.Context, topic string, partition int32, records []*kgo.Record, handle BatchHandler, gate *rebalanceGate, logger *slog.Logger) (handled bool) {
	// The batch's work joins the traces its records came with.
	ctx, endSpans := processSpans(ctx, records)
	var err error
	defer func() {
		if !handled && err == nil {
			err = errNotHandled
		}
		endSpans(err)
	}()
	backoff := 100 * time.Millisecond
	grace := firstAttemptGrace
	for try := 1; ; try++ {
		err = gate.attempt(ctx, grace, func(ctx context.Context) error { return handle(ctx, topic, partition, records) })
		if err == nil {
			return true
		}
		trace.SpanFromContext(ctx).RecordError(err)
		if ctx.Err() != nil {
			return false
		}
		logger.Warn("batch failed; retrying", slog.String("topic", topic), slog.Int("partition", int(partition)),
			slog.Int64("first_offset", records[0].Offset), slog.Int("records", len(records)), slog.Int("attempt", try), slog.Any("err", err))
		select {
		case <-ctx.Done():
			return false
		case <-gate.wait():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
		grace = 0
	}
}

// errNotHandled is the status of a batch given up for a rebalance or a
// shutdown: its records are offered again.
var errNotHandled = errors.New("not handled; offered again")

// firstAttemptGrace is how long a batch's first attempt may go on once a
// rebalance waits for it.
const firstAttemptGrace = 2 * time.Second

// attempt runs fn with a context cancelled grace after a rebalance starts
// waiting.
func (g *rebalanceGate) attempt(ctx context.Context, grace time.Duration, fn func(context.Context) error) error {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	waiting := g.wait()
	go func() {
		select {
		case <-waiting:
		case <-actx.Done():
			return
		}
		select {
		case <-time.After(grace):
			cancel()
		case <-actx.Done():
		}
	}()
	return fn(actx)
}

// gates holds the rebalanceGate of each client in ConsumeLoop, for the
// OnPartitionsCallbackBlocked hook that GroupOpts installs.
var gates sync.Map // *kgo.Client → *rebalanceGate

// signalRebalance is called by franz-go, in a goroutine of its own, when a
// rebalance waits for the loop to allow it.
func signalRebalance(_ context.Context, cl *kgo.Client) {
	if g, ok := gates.Load(cl); ok {
		g.(*rebalanceGate).signal()
	}
}

// rebalanceGate says whether a rebalance waits for the loop: waiting is
// closed from the signal until the loop allows rebalancing again.
type rebalanceGate struct {
	mu      sync.Mutex
	waiting chan struct{}
}

func (g *rebalanceGate) signal() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.waiting:
	default:
		close(g.waiting)
	}
}

func (g *rebalanceGate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

func (g *rebalanceGate) isWaiting() bool {
	select {
	case <-g.wait():
		return true
	default:
		return false
	}
}

// reset is called just before the loop allows rebalancing.
func (g *rebalanceGate) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.waiting:
		g.waiting = make(chan struct{})
	default:
	}
}
