// Package kafkarec is the Kafka form of the platform's events: the
// CloudEvents 1.0 binary-mode headers around an event's JSON data, keyed by
// account. The producer builds records with Record; every consumer reads
// them with Decode. Package events holds what a record carries and knows
// nothing of Kafka.
package kafkarec

import (
	"encoding/json"
	"fmt"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

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

// specVersion is the CloudEvents version of every record.
const specVersion = "1.0"

// Record returns the Kafka record of m on topic: key = account id, so one
// account's events keep their order on one partition.
func Record(m events.Message, topic string) *kgo.Record {
	headers := []kgo.RecordHeader{
		{Key: HeaderSpecVersion, Value: []byte(specVersion)},
		{Key: HeaderID, Value: []byte(m.ID)},
		{Key: HeaderSource, Value: []byte(events.Source)},
		{Key: HeaderType, Value: []byte(events.CEType(m.Type))},
		{Key: HeaderTime, Value: []byte(events.FormatTime(m.Time))},
		{Key: HeaderSubject, Value: []byte(m.Subject)},
		{Key: HeaderAccountID, Value: []byte(m.AccountID)},
		{Key: HeaderContentType, Value: []byte("application/json")},
	}
	if m.Traceparent != "" {
		headers = append(headers, kgo.RecordHeader{Key: HeaderTraceparent, Value: []byte(m.Traceparent)})
	}
	return &kgo.Record{Topic: topic, Key: []byte(m.AccountID), Value: m.Data, Headers: headers}
}

// Decode checks a record's CloudEvents headers and validates its data against
// the event type's JSON Schema, then returns the event. Any failure wraps
// events.ErrMalformed and names the reason.
func Decode(r *kgo.Record) (events.Event, error) {
	h := make(map[string]string, len(r.Headers))
	for _, kv := range r.Headers {
		h[kv.Key] = string(kv.Value)
	}
	if h[HeaderSpecVersion] != specVersion {
		return events.Event{}, fmt.Errorf("%w: %s is %q, want %q", events.ErrMalformed, HeaderSpecVersion, h[HeaderSpecVersion], specVersion)
	}
	if err := events.ValidateData(r.Value); err != nil {
		return events.Event{}, err
	}
	var e events.Event
	if err := json.Unmarshal(r.Value, &e); err != nil {
		return events.Event{}, fmt.Errorf("%w: %v", events.ErrMalformed, err)
	}
	checks := []struct{ header, want string }{
		{HeaderID, e.EventID},
		{HeaderType, events.CEType(e.EventType)},
		{HeaderSubject, e.DocumentID},
		{HeaderAccountID, e.AccountID},
	}
	for _, c := range checks {
		if h[c.header] != c.want {
			return events.Event{}, fmt.Errorf("%w: %s is %q, data says %q", events.ErrMalformed, c.header, h[c.header], c.want)
		}
	}
	if string(r.Key) != e.AccountID {
		return events.Event{}, fmt.Errorf("%w: key %q is not the account %q", events.ErrMalformed, r.Key, e.AccountID)
	}
	return e, nil
}

// ConsentRecord returns the record of r on events.ConsentTopic: key
// "<accountId>/<documentId>", value the state as JSON, no CloudEvents
// headers (the value is a state, not an event).
func ConsentRecord(r events.ConsentRecord) (*kgo.Record, error) {
	value, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode consent of %s: %w", r.Key(), err)
	}
	return &kgo.Record{
		Topic:   events.ConsentTopic,
		Key:     []byte(r.Key()),
		Value:   value,
		Headers: []kgo.RecordHeader{{Key: HeaderContentType, Value: []byte("application/json")}},
	}, nil
}

// DecodeConsent validates a record of events.ConsentTopic against its
// schema and checks that its key is the value's document. Any failure
// wraps events.ErrMalformed.
func DecodeConsent(rec *kgo.Record) (events.ConsentRecord, error) {
	r, err := events.DecodeConsentRecord(rec.Value)
	if err != nil {
		return events.ConsentRecord{}, err
	}
	if string(rec.Key) != r.Key() {
		return events.ConsentRecord{}, fmt.Errorf("%w: key %q is not the value's %q", events.ErrMalformed, rec.Key, r.Key())
	}
	return r, nil
}
