package kafkax

import (
	"context"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Dead-letter headers, added to the original record's own.
const (
	HeaderDLQReason    = "rcm_dlq_reason"
	HeaderDLQTopic     = "rcm_dlq_topic"
	HeaderDLQPartition = "rcm_dlq_partition"
	HeaderDLQOffset    = "rcm_dlq_offset"
)

// DeadLetter returns the function that parks a record nobody can use on
// topic, with the reason and its origin in headers and its key, value and
// headers untouched (but for a traceparent, which the tracing hook sets to
// the parked record's publish span, in the original's trace). It returns
// once the broker has the record, so the caller may then commit past the
// original.
func DeadLetter(cl *kgo.Client, topic string) func(ctx context.Context, r *kgo.Record, reason error) error {
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
