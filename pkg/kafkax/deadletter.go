package kafkax

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

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
// untouched. It returns once the broker has the record.
func DeadLetter(cl *kgo.Client, topic string) DeadLetterFunc {
	return func(ctx context.Context, r *kgo.Record, reason error) error {
		headers := append([]kgo.RecordHeader{
			{Key: HeaderDLQReason, Value: []byte(reason.Error())},
			{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
			{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		}, r.Headers...)
		res := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: headers})
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
// dead-letter topic with its reason, is counted and is logged.
type DeadLetters struct {
	park   DeadLetterFunc
	parked prometheus.Counter
	logger *slog.Logger
}

// NewDeadLetters returns DeadLetters that park with park and count on
// parked, a counter the consumer defines and registers.
func NewDeadLetters(park DeadLetterFunc, parked prometheus.Counter, logger *slog.Logger) *DeadLetters {
	return &DeadLetters{park: park, parked: parked, logger: logger}
}

// Park parks rs in order; an error means the ones from the failed one on
// are not parked yet.
func (d *DeadLetters) Park(ctx context.Context, rs ...Rejected) error {
	for _, rj := range rs {
		r := rj.Record
		if err := d.park(ctx, r, rj.Reason); err != nil {
			return err
		}
		d.parked.Inc()
		d.logger.WarnContext(ctx, "record sent to the dead-letter topic", slog.String("topic", r.Topic),
			slog.Int("partition", int(r.Partition)), slog.Int64("offset", r.Offset), slog.String("key", string(r.Key)),
			slog.String("reason", rj.Reason.Error()))
	}
	return nil
}

// DecodeOrDeadLetter is the step every consumer's batch goes through. It
// decodes each record of one partition's batch, hands what decoded to
// process in offset order, and then parks on the dead-letter topic what
// did not decode and what process rejected (a record it can never
// process), in offset order. It returns nil only once process succeeded
// and every rejected record is parked. An error of process (a failure a
// retry may cure) is returned as it is before anything is parked, so
// that a batch retried while the store is down parks each record once,
// not once per attempt.
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
	var more []Rejected
	if len(batch) > 0 {
		var err error
		if more, err = process(ctx, batch); err != nil {
			return err
		}
	}
	rejected = append(rejected, more...)
	slices.SortStableFunc(rejected, func(a, b Rejected) int { return cmp.Compare(a.Record.Offset, b.Record.Offset) })
	return dl.Park(ctx, rejected...)
}
