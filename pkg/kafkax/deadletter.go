package kafkax

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Dead-letter headers, added to the original record's own.
const (
	HeaderDLQReason    = "rcm_dlq_reason"
	HeaderDLQTopic     = "rcm_dlq_topic"
	HeaderDLQPartition = "rcm_dlq_partition"
	HeaderDLQOffset    = "rcm_dlq_offset"
)

// DeadLetterFunc parks a record nobody can use on a dead-letter topic
// with the reason. It returns nil only once the record is parked, so the
// caller may then commit past the original.
type DeadLetterFunc func(ctx context.Context, r *kgo.Record, reason error) error

// DeadLetter returns the function that parks a record on topic, with the
// reason and its origin in headers and its key, value and headers
// untouched (but for a traceparent, which the tracing hook sets to the
// parked record's publish span, in the original's trace). It returns once
// the broker has the record.
func DeadLetter(cl *kgo.Client, topic string) DeadLetterFunc {
	return func(ctx context.Context, r *kgo.Record, reason error) error {
		headers := append([]kgo.RecordHeader{
			{Key: HeaderDLQReason, Value: []byte(reason.Error())},
			{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
			{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		}, r.Headers...)
		// The original's context, so that the publish span continues its
		// trace rather than the batch's.
		res := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: headers, Context: r.Context})
		if err := res.FirstErr(); err != nil {
			return fmt.Errorf("dead-letter to %s: %w", topic, err)
		}
		return nil
	}
}

// Rejected is a record that can never be processed, and why.
type Rejected struct {
	Record *kgo.Record
	Reason error
}

// Decoded is what a record decoded to, with the record.
type Decoded[T any] struct {
	Value  T
	Record *kgo.Record
}

// DeadLetters parks the records a consumer rejects: each goes to the
// dead-letter topic with its reason, is counted and is logged, once
// however often its batch is retried.
type DeadLetters struct {
	park   DeadLetterFunc
	parked prometheus.Counter
	logger *slog.Logger

	mu sync.Mutex
	// batches holds, per partition, the offsets parked from the batch in
	// hand, so that a retry of it parks nothing twice.
	batches map[partition]parkedBatch
}

type partition struct {
	topic string
	id    int32
}

// parkedBatch is the first offset of a batch and the offsets parked from
// it.
type parkedBatch struct {
	first   int64
	offsets map[int64]bool
}

// NewDeadLetters returns DeadLetters that park with park and count on
// parked, a counter the consumer defines and registers.
func NewDeadLetters(park DeadLetterFunc, parked prometheus.Counter, logger *slog.Logger) *DeadLetters {
	return &DeadLetters{park: park, parked: parked, logger: logger, batches: map[partition]parkedBatch{}}
}

// parkAll parks rs, records of batch, in order, but for those parked
// before from the same batch: a batch that failed later on is offered
// again whole, starting at the same offset. An error means the ones from
// the failed one on are not parked yet.
func (d *DeadLetters) parkAll(ctx context.Context, batch []*kgo.Record, rs []Rejected) error {
	if len(rs) == 0 {
		return nil
	}
	key := partition{batch[0].Topic, batch[0].Partition}
	d.mu.Lock()
	b, ok := d.batches[key]
	if !ok || b.first != batch[0].Offset {
		// A new batch: what came before it is handled.
		b = parkedBatch{first: batch[0].Offset, offsets: map[int64]bool{}}
		d.batches[key] = b
	}
	d.mu.Unlock()
	for _, rj := range rs {
		r := rj.Record
		d.mu.Lock()
		done := b.offsets[r.Offset]
		d.mu.Unlock()
		if done {
			continue
		}
		if err := d.park(ctx, r, rj.Reason); err != nil {
			return err
		}
		d.mu.Lock()
		b.offsets[r.Offset] = true
		d.mu.Unlock()
		d.parked.Inc()
		d.logger.WarnContext(ctx, "record sent to the dead-letter topic", slog.String("topic", r.Topic),
			slog.Int("partition", int(r.Partition)), slog.Int64("offset", r.Offset), slog.String("key", string(r.Key)),
			slog.String("reason", rj.Reason.Error()))
	}
	return nil
}

// DecodeOrDeadLetter is the step every consumer's batch goes through. It
// decodes each record of one partition's batch and parks on the
// dead-letter topic what does not decode, in offset order; then it hands
// what decoded to process, in offset order, and parks what process
// rejects (a record it can never process). It returns nil only once every
// record is processed or parked; an error (a failure a retry may cure)
// means that nothing after it ran: no record is processed before the
// malformed ones of its batch are parked. A batch offered again after an
// error parks nothing twice.
func DecodeOrDeadLetter[T any](ctx context.Context, records []*kgo.Record, decode func(*kgo.Record) (T, error),
	process func(ctx context.Context, batch []Decoded[T]) ([]Rejected, error), dl *DeadLetters) error {
	batch := make([]Decoded[T], 0, len(records))
	var rejected []Rejected
	for _, r := range records {
		v, err := decode(r)
		if err != nil {
			rejected = append(rejected, Rejected{Record: r, Reason: err})
			continue
		}
		batch = append(batch, Decoded[T]{Value: v, Record: r})
	}
	if err := dl.parkAll(ctx, records, rejected); err != nil {
		return err
	}
	if len(batch) == 0 {
		return nil
	}
	rejected, err := process(ctx, batch)
	if err != nil {
		return err
	}
	return dl.parkAll(ctx, records, rejected)
}
