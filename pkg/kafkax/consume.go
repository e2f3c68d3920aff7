package kafkax

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
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
// backoff, commits the offsets of what was handled, and only then allows a
// rebalance: offsets are committed only after the work is durable, and a
// partition cannot move to another member in the middle of a batch.
//
// Retries are bounded by rebalances: once a rebalance waits for this loop
// (kgo.OnPartitionsCallbackBlocked), a failing batch is not tried again,
// nor are the partitions not handled yet; the loop commits what was
// handled, moves the consume position of every other partition of the
// fetch back to its first unhandled record, and allows the rebalance. A
// partition that stays with this member is then fetched again from that
// record, one that moves is read by its new owner from the committed
// offset: nothing is skipped, and no record holds a rebalance longer than
// firstAttemptGrace. It returns when ctx is done, after committing what
// was handled.
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
	for {
		fetches := cl.PollRecords(ctx, maxRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
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
		for i, p := range parts {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				handled[i] = !gate.isWaiting() && ctx.Err() == nil &&
					handleWithRetry(ctx, p.Topic, p.Partition, p.Records, handle, gate, logger)
			})
		}
		wg.Wait()
		var done []*kgo.Record
		rewind := map[string]map[int32]kgo.EpochOffset{}
		for i, p := range parts {
			if handled[i] {
				done = append(done, p.Records...)
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
			// Commit even while shutting down: the work is done.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := cl.CommitRecords(cctx, done...); err != nil {
				logger.Warn("commit failed; the records will be redelivered and deduplicated", slog.Any("err", err))
			}
			cancel()
		}
		if len(rewind) > 0 {
			// Before AllowRebalance, while no revoke can run.
			cl.SetOffsets(rewind)
			logger.Warn("a rebalance is waiting: unhandled records will be fetched again", slog.Any("from", rewind))
		}
		gate.reset()
		cl.AllowRebalance()
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
