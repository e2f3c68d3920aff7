package kafkarec

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// evtID is a valid event id: the schema checks the form.
const evtID = "evt_01k0b2z9y8x7w6v5t3s2r1q0pn"

func optOut(t *testing.T) (events.Event, events.Message) {
	t.Helper()
	f, active := false, true
	e := events.Event{
		EventID: evtID, EventType: events.TypeOptOut, AccountID: "org_1",
		DocumentID: "doc_1", CampaignID: "rcm_01k0b2z9y8x7w6v5t3s2r1q0pn", Actor: events.Actor{Type: events.ActorUser, ID: "user_1"},
		OccurredAt: events.FormatTime(time.Date(2026, 4, 27, 10, 0, 0, 0, time.UTC)), Channel: "sms",
		Deactivated: &f, Active: &active, ActiveChannels: []string{"email"},
	}
	m, err := events.NewMessage(e, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err != nil {
		t.Fatal(err)
	}
	return e, m
}

func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func TestRecordDecodes(t *testing.T) {
	t.Parallel()
	e, m := optOut(t)
	r := Record(m, "topic_1")
	if r.Topic != "topic_1" || string(r.Key) != "org_1" || string(r.Value) != string(m.Data) {
		t.Fatalf("got topic %q key %q value %s, want topic_1, org_1, the message's data", r.Topic, r.Key, r.Value)
	}
	for key, want := range map[string]string{
		HeaderSpecVersion: "1.0", HeaderID: evtID, HeaderSource: events.Source, HeaderType: "rcm.opt_out.v1",
		HeaderTime: "2026-04-27T10:00:00.000Z", HeaderSubject: "doc_1", HeaderAccountID: "org_1",
		HeaderContentType: "application/json", HeaderTraceparent: m.Traceparent,
	} {
		if got, _ := header(r, key); got != want {
			t.Errorf("header %s: got %q, want %q", key, got, want)
		}
	}
	got, err := Decode(r)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("got %+v, want %+v", got, e)
	}
}

func TestRecordWithoutTraceparent(t *testing.T) {
	t.Parallel()
	_, m := optOut(t)
	m.Traceparent = ""
	if v, ok := header(Record(m, "t"), HeaderTraceparent); ok {
		t.Fatalf("got traceparent %q, want none", v)
	}
}

func TestDecodeRefuses(t *testing.T) {
	t.Parallel()
	set := func(key, value string) func(*kgo.Record) {
		return func(r *kgo.Record) {
			for i := range r.Headers {
				if r.Headers[i].Key == key {
					r.Headers[i].Value = []byte(value)
				}
			}
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*kgo.Record)
	}{
		{"other spec version", set(HeaderSpecVersion, "0.3")},
		{"id not the data's", set(HeaderID, "evt_2")},
		{"type not the data's", set(HeaderType, "rcm.campaign_ended.v1")},
		{"subject not the document", set(HeaderSubject, "doc_2")},
		{"account not the data's", set(HeaderAccountID, "org_2")},
		{"key not the account", func(r *kgo.Record) { r.Key = []byte("org_2") }},
		{"data not JSON", func(r *kgo.Record) { r.Value = []byte("{") }},
		{"data off the schema", func(r *kgo.Record) { r.Value = []byte(`{"eventType":"opt_out","eventId":"` + evtID + `"}`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, m := optOut(t)
			r := Record(m, "t")
			tc.change(r)
			if _, err := Decode(r); !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("got %v, want an error wrapping events.ErrMalformed", err)
			}
		})
	}
}

func TestConsentRecordDecodes(t *testing.T) {
	t.Parallel()
	c := events.NewConsent()
	if err := c.Set("call", events.ConsentRevoked, events.SourceConsent, evtID, time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	want := events.ConsentRecord{AccountID: "org_1", DocumentID: "doc_1", Consent: c}
	r, err := ConsentRecord(want)
	if err != nil {
		t.Fatal(err)
	}
	if r.Topic != events.ConsentTopic || string(r.Key) != "org_1/doc_1" {
		t.Fatalf("got topic %q key %q, want %s and org_1/doc_1", r.Topic, r.Key, events.ConsentTopic)
	}
	got, err := DecodeConsent(r)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	r.Key = []byte("org_1/doc_2")
	if _, err := DecodeConsent(r); !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("another document's key: got %v, want ErrMalformed", err)
	}
	r.Key, r.Value = []byte("org_1/doc_1"), []byte(`{"accountId":"org_1","documentId":"doc_1","version":1}`)
	if _, err := DecodeConsent(r); !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("a value without channels: got %v, want ErrMalformed", err)
	}
}
