package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
)

// Message is an event ready to publish: the CloudEvents attributes and the
// encoded JSON data. The campaign service stores it in the outbox exactly as
// it will be published, so a republished event is byte-for-byte the same.
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

// CloudEvents header names in Kafka binary mode.
const (
	HeaderSpecVersion = "ce_specversion"
	HeaderID          = "ce_id"
	HeaderSource      = "ce_source"
	HeaderType        = "ce_type"
	HeaderTime        = "ce_time"
	HeaderSubject     = "ce_subject"
	HeaderAccountID   = "ce_accountid"
	HeaderContentType = "content-type"
	HeaderTraceparent = "traceparent"
)

// Record returns the Kafka record of m on topic: key = account id, so one
// account's events keep their order on one partition.
func (m Message) Record(topic string) *kgo.Record {
	headers := []kgo.RecordHeader{
		{Key: HeaderSpecVersion, Value: []byte(specV1)},
		{Key: HeaderID, Value: []byte(m.ID)},
		{Key: HeaderSource, Value: []byte(Source)},
		{Key: HeaderType, Value: []byte(CEType(m.Type))},
		{Key: HeaderTime, Value: []byte(FormatTime(m.Time))},
		{Key: HeaderSubject, Value: []byte(m.Subject)},
		{Key: HeaderAccountID, Value: []byte(m.AccountID)},
		{Key: HeaderContentType, Value: []byte("application/json")},
	}
	if m.Traceparent != "" {
		headers = append(headers, kgo.RecordHeader{Key: HeaderTraceparent, Value: []byte(m.Traceparent)})
	}
	return &kgo.Record{Topic: topic, Key: []byte(m.AccountID), Value: m.Data, Headers: headers}
}

// ErrMalformed wraps every reason a record is not a valid event.
var ErrMalformed = errors.New("malformed event")

// Decode checks a record's CloudEvents headers and validates its data against
// the event type's JSON Schema, then returns the event. Any failure wraps
// ErrMalformed and names the reason.
func Decode(r *kgo.Record) (Event, error) {
	h := make(map[string]string, len(r.Headers))
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	if h[HeaderSpecVersion] != specV1 {
		return Event{}, fmt.Errorf("%w: %s is %q, want %q", ErrMalformed, HeaderSpecVersion, h[HeaderSpecVersion], specV1)
	}
	if err := ValidateData(r.Value); err != nil {
		return Event{}, err
	}
	var e Event
	if err := json.Unmarshal(r.Value, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	checks := []struct{ header, want string }{
		{HeaderID, e.EventID},
		{HeaderType, CEType(e.EventType)},
		{HeaderSubject, e.DocumentID},
		{HeaderAccountID, e.AccountID},
	}
	for _, c := range checks {
		if h[c.header] != c.want {
			return Event{}, fmt.Errorf("%w: %s is %q, data says %q", ErrMalformed, c.header, h[c.header], c.want)
		}
	}
	if string(r.Key) != e.AccountID {
		return Event{}, fmt.Errorf("%w: key %q is not the account %q", ErrMalformed, r.Key, e.AccountID)
	}
	return e, nil
}

type traceparentKey struct{}

// WithTraceparent returns ctx carrying a W3C traceparent to put on the
// events produced while handling it.
func WithTraceparent(ctx context.Context, tp string) context.Context {
	return context.WithValue(ctx, traceparentKey{}, tp)
}

// TraceparentFrom returns the traceparent WithTraceparent stored, else
// that of the span ctx carries (the request's or the record's being
// handled), else "".
func TraceparentFrom(ctx context.Context) string {
	if tp, ok := ctx.Value(traceparentKey{}).(string); ok {
		return tp
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier[HeaderTraceparent]
}
