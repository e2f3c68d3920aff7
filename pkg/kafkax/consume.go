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
		if blocked && inFlight.answered() {
			allow()
		}
		fetches, byGate := poll(ctx, cl, maxRecords, gate, blocked)
		blocked = true
		if fetches.IsClientClosed() || ctx.Err() != nil {
			allow()
			return nil
		}
		if byGate && fetches.NumRecords() == 0 {
			// A rebalance waits while the last commit is in flight.
			allow()
			continue
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if byGate && errors.Is(err, context.Canceled) {
				return
			}
			logger.Warn("fetch error", slog.String("topic", topic), slog.Int("partition", int(partition)), slog.Any("err", err))
		})
		var parts []kgo.FetchTopicPartition
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) > 0 {
				parts = append(parts, p)
			}
		})
		handled := make([]bool, len(parts))
		var wg sync.WaitGroup
		sem := make(chan struct{}, cfg.atOnce)
		fctx := context.WithValue(ctx, fetchKey{}, &fetchOf{partitions: min(len(parts), cfg.atOnce)})
		for i, p := range parts {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				handled[i] = !gate.isWaiting() && ctx.Err() == nil &&
					handleWithRetry(fctx, p.Topic, p.Partition, p.Records, handle, gate, logger)
			})
		}
		wg.Wait()
		done := map[string]map[int32]kgo.EpochOffset{}
		rewind := map[string]map[int32]kgo.EpochOffset{}
		for i, p := range parts {
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
			if rewind[p.Topic] == nil {
				rewind[p.Topic] = map[int32]kgo.EpochOffset{}
			}
			// Epoch -1: no data-loss check against the leader epoch, as
			// franz-go advises when moving a position by hand.
			rewind[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: -1, Offset: p.Records[0].Offset}
		}
		if len(done) > 0 {
			// Sent even while shutting down: the work is done. It
			// follows the commit before it, if that is still in flight.
			inFlight = commitAsync(ctx, cl, done, logger)
		}
		if len(rewind) > 0 {
			// Before AllowRebalance, while no revoke can run.
			cl.SetOffsets(rewind)
			logger.Warn("a rebalance is waiting: unhandled records will be fetched again", slog.Any("from", rewind))
		}
		if len(rewind) > 0 || gate.isWaiting() || ctx.Err() != nil {
			allow()
		}
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

type fetchKey struct{}

// fetchOf is a fetch whose partitions ConsumeLoop hands over at once.
type fetchOf struct{ partitions int }

// FetchPartitions returns how many partitions of the fetch being handled
// ConsumeLoop hands over at the same time as the one of ctx, itself
// included, and a value that is the same for all of them and differs from
// one fetch to the next: a handler that merges the partitions of a fetch
// knows how many to wait for. It is 1 and nil outside ConsumeLoop. The
// loop may still not hand one over (a rebalance waits): a handler must
// not wait for the others forever.
func FetchPartitions(ctx context.Context) (int, any) {
	if f, ok := ctx.Value(fetchKey{}).(*fetchOf); ok {
		return f.partitions, f
	}
	return 1, nil
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
