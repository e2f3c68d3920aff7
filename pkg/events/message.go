package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Message is an event ready to publish: the CloudEvents attributes and the
// encoded JSON data; kafkarec.Record makes it a Kafka record. The campaign
// service stores it in the outbox exactly as it will be published, so a
// republished event is byte-for-byte the same.
type Message struct {
	ID          string
	Type        string // the data's eventType
	AccountID   string
	Subject     string // the document id
	Time        time.Time
	Data        []byte
	Traceparent string
}

// NewMessage encodes e.
func NewMessage(e Event, traceparent string) (Message, error) {
	at, err := e.Time()
	if err != nil {
		return Message{}, err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return Message{}, fmt.Errorf("encode event %s: %w", e.EventID, err)
	}
	return Message{
		ID:          e.EventID,
		Type:        e.EventType,
		AccountID:   e.AccountID,
		Subject:     e.DocumentID,
		Time:        at,
		Data:        data,
		Traceparent: traceparent,
	}, nil
}

// ErrMalformed wraps every reason data or a record is not a valid event.
var ErrMalformed = errors.New("malformed event")

// ErrUnknownType is the ErrMalformed of data whose eventType is not one of
// Types: possibly a type added after the reader was built, which a
// consumer may ignore rather than park.
var ErrUnknownType = fmt.Errorf("%w: unknown eventType", ErrMalformed)

type traceparentKey struct{}

// WithTraceparent returns ctx carrying a W3C traceparent to put on the
// events produced while handling it.
func WithTraceparent(ctx context.Context, tp string) context.Context {
	return context.WithValue(ctx, traceparentKey{}, tp)
}

// TraceparentFrom returns the traceparent WithTraceparent stored, else
// the W3C traceparent of the span ctx carries (the request's or the
// record's being handled), else "".
func TraceparentFrom(ctx context.Context) string {
	if tp, ok := ctx.Value(traceparentKey{}).(string); ok {
		return tp
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}
