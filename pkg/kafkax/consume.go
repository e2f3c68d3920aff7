package kafkax

import (
	"context"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BatchHandler processes the records fetched from one partition, in offset
// order. It returns nil only once the batch is durably processed; an error
// means "not yet" and the same batch is offered again after a pause.
type BatchHandler func(ctx context.Context, topic string, partition int32, records []*kgo.Record) error

// ConsumeLoop is the poll loop of a consumer-group client created with
// kgo.DisableAutoCommit() and kgo.BlockRebalanceOnPoll(). For each fetch it
// hands every partition's batch to handle, retrying a failed batch with
// backoff until it succeeds (a batch is never skipped), commits the offsets
// of what was handled, and only then allows a rebalance: offsets are
// committed only after the work is durable, and a partition cannot move to
// another member in the middle of a batch. It returns when ctx is done,
// after committing what was handled.
func ConsumeLoop(ctx context.Context, cl *kgo.Client, maxRecords int, handle BatchHandler, logger *slog.Logger) error {
	for {
		fetches := cl.PollRecords(ctx, maxRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			logger.Warn("fetch error", slog.String("topic", topic), slog.Int("partition", int(partition)), slog.Any("err", err))
		})
		var done []*kgo.Record
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 || ctx.Err() != nil {
				return
			}
			if handleWithRetry(ctx, p.Topic, p.Partition, p.Records, handle, logger) {
				done = append(done, p.Records...)
			}
		})
		if len(done) > 0 {
			// Commit even while shutting down: the work is done.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := cl.CommitRecords(cctx, done...); err != nil {
				logger.Warn("commit failed; the records will be redelivered and deduplicated", slog.Any("err", err))
			}
			cancel()
		}
		cl.AllowRebalance()
	}
}

func handleWithRetry(ctx context.Context, topic string, partition int32, records []*kgo.Record, handle BatchHandler, logger *slog.Logger) bool {
	backoff := 100 * time.Millisecond
	for {
		err := handle(ctx, topic, partition, records)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		logger.Warn("batch failed; retrying", slog.String("topic", topic), slog.Int("partition", int(partition)),
			slog.Int64("first_offset", records[0].Offset), slog.Int("records", len(records)), slog.Any("err", err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// Retry runs fn until it succeeds or ctx ends, with backoff, logging each
// failure: how a service waits for a dependency at start-up. It returns
// nil when ctx ends.
func Retry(ctx context.Context, logger *slog.Logger, what string, fn func(context.Context) error) error {
	backoff := 200 * time.Millisecond
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := fn(sctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		logger.Warn("start-up step failed; retrying", slog.String("step", what), slog.Any("err", err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
