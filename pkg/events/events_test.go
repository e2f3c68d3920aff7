package events_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/api"
	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/events"
)

const (
	evt1 = "evt_01k0b2z9y8x7w6v5t3s2r1q0pn"
	evt2 = "evt_01k0b2z9y8x7w6v5t3s2r1q0pp"
	rcm1 = "rcm_01k0b2z9y8x7w6v5t3s2r1q0pn"
	att1 = "att_01k0b2z9y8x7w6v5t3s2r1q0pn"
)

var at = time.Date(2026, 5, 1, 14, 5, 0, 0, time.UTC)

func head(campaignID string) events.Head {
	return events.Head{EventID: evt2, AccountID: "org_1", DocumentID: "doc_1", CampaignID: campaignID,
		Actor: events.Actor{Type: events.ActorUser, ID: "user_1", SessionID: "sess_1"}, At: at}
}

// revokedSMS is a document's consent after one opt-out of sms.
func revokedSMS(t *testing.T) events.Consent {
	t.Helper()
	c := events.NewConsent()
	if err := c.Set("sms", events.ConsentRevoked, events.SourceOptOut, evt1, at.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	return c
}

func encode(t *testing.T, e events.Event) []byte {
	t.Helper()
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// examples returns a valid event of each new type, and opt_out with and
// without consent, by name.
func examples(t *testing.T) map[string]events.Event {
	t.Helper()
	f, tr := false, true
	optOut := events.Event{EventID: evt1, EventType: events.TypeOptOut, AccountID: "org_1", DocumentID: "doc_1",
		CampaignID: rcm1, Actor: events.Actor{Type: events.ActorUser, ID: "user_1"}, OccurredAt: events.FormatTime(at),
		Channel: "sms", Deactivated: &f, Active: &tr, ActiveChannels: []string{"email"}}
	withConsent := optOut
	consent := revokedSMS(t)
	withConsent.Consent = &consent
	return map[string]events.Event{
		"opt_out without consent (older events)": optOut,
		"opt_out with consent":                   withConsent,
		"consent_changed": events.NewConsentChanged(head(rcm1), events.ConsentChangedData{
			Channel: "all", Status: events.ConsentRevoked, Basis: "Borrower wrote a letter", Notes: "Scanned", Consent: consent,
		}),
		"contact_attempted outbound": events.NewContactAttempted(head(rcm1), events.ContactAttemptedData{
			AttemptID: att1, Channel: "call", Direction: events.DirectionOutbound, AttemptedAt: at,
		}),
		"contact_attempted inbound without campaign": events.NewContactAttempted(head(""), events.ContactAttemptedData{
			AttemptID: att1, Channel: "call", Direction: events.DirectionInbound, AttemptedAt: at, Notes: "Called back",
		}),
		"contact_blocked with nextAllowedAt": events.NewContactBlocked(head(rcm1), events.ContactBlockedData{
			AttemptID: att1, Channel: "call", Reason: events.ReasonCallFrequencyLimit, NextAllowedAt: at.Add(26 * time.Hour),
		}),
		"contact_blocked without nextAllowedAt": events.NewContactBlocked(head(rcm1), events.ContactBlockedData{
			AttemptID: att1, Channel: "sms", Reason: events.ReasonOptedOut,
		}),
		"contact_outcome call": events.NewContactOutcome(head(rcm1), events.ContactOutcomeData{
			AttemptID: att1, Channel: "call", Outcome: contract.OutcomeConversation, OutcomeAt: at, Notes: "Promised to pay",
		}),
		"contact_outcome email without campaign": events.NewContactOutcome(head(""), events.ContactOutcomeData{
			AttemptID: att1, Channel: "email", Outcome: contract.OutcomeBounced, OutcomeAt: at,
		}),
	}
}

func TestValidEventsPassTheirSchemas(t *testing.T) {
	t.Parallel()
	for name, e := range examples(t) {
		raw := encode(t, e)
		if err := events.ValidateData(raw); err != nil {
			t.Errorf("%s: %v\n%s", name, err, raw)
		}
		// What is published reads back as what was built.
		var back events.Event
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, e) {
			t.Errorf("%s: read back %+v, want %+v", name, back, e)
		}
	}
}

func TestConstructorsWriteTheContractsFields(t *testing.T) {
	t.Parallel()
	ex := examples(t)
	for name, want := range map[string]string{
		"consent_changed": `{"eventId":"evt_01k0b2z9y8x7w6v5t3s2r1q0pp","eventType":"consent_changed","accountId":"org_1","documentId":"doc_1",` +
			`"actor":{"type":"user","id":"user_1","sessionId":"sess_1"},"occurredAt":"2026-05-01T14:05:00.000Z","channel":"all","notes":"Scanned",` +
			`"status":"revoked","basis":"Borrower wrote a letter","consent":{"channels":{` +
			`"sms":{"status":"revoked","changedAt":"2026-05-01T13:05:00.000Z","eventId":"evt_01k0b2z9y8x7w6v5t3s2r1q0pn","source":"opt_out"},` +
			`"email":{"status":"granted","changedAt":null,"eventId":null,"source":null},` +
			`"call":{"status":"granted","changedAt":null,"eventId":null,"source":null}},"version":1}}`,
		"contact_attempted inbound without campaign": `{"eventId":"evt_01k0b2z9y8x7w6v5t3s2r1q0pp","eventType":"contact_attempted","accountId":"org_1","documentId":"doc_1",` +
			`"actor":{"type":"user","id":"user_1","sessionId":"sess_1"},"occurredAt":"2026-05-01T14:05:00.000Z","channel":"call","notes":"Called back",` +
			`"attemptId":"att_01k0b2z9y8x7w6v5t3s2r1q0pn","direction":"inbound","attemptedAt":"2026-05-01T14:05:00.000Z"}`,
		"contact_blocked without nextAllowedAt": `{"eventId":"evt_01k0b2z9y8x7w6v5t3s2r1q0pp","eventType":"contact_blocked","accountId":"org_1","documentId":"doc_1",` +
			`"campaignId":"rcm_01k0b2z9y8x7w6v5t3s2r1q0pn","actor":{"type":"user","id":"user_1","sessionId":"sess_1"},"occurredAt":"2026-05-01T14:05:00.000Z",` +
			`"channel":"sms","reason":"opted_out","attemptId":"att_01k0b2z9y8x7w6v5t3s2r1q0pn","nextAllowedAt":null}`,
		"contact_blocked with nextAllowedAt": `{"eventId":"evt_01k0b2z9y8x7w6v5t3s2r1q0pp","eventType":"contact_blocked","accountId":"org_1","documentId":"doc_1",` +
			`"campaignId":"rcm_01k0b2z9y8x7w6v5t3s2r1q0pn","actor":{"type":"user","id":"user_1","sessionId":"sess_1"},"occurredAt":"2026-05-01T14:05:00.000Z",` +
			`"channel":"call","reason":"call_frequency_limit","attemptId":"att_01k0b2z9y8x7w6v5t3s2r1q0pn","nextAllowedAt":"2026-05-02T16:05:00.000Z"}`,
	} {
		if got := string(encode(t, ex[name])); got != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	// consent_changed belongs to no campaign, whatever the head says.
	if got := ex["consent_changed"].CampaignID; got != "" {
		t.Errorf("consent_changed has campaignId %q, want none", got)
	}
}

// mutate decodes raw, applies f to the object and encodes it again.
func mutate(t *testing.T, raw []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInvalidEventsFail(t *testing.T) {
	t.Parallel()
	ex := examples(t)
	del := func(k string) func(map[string]any) { return func(m map[string]any) { delete(m, k) } }
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	for _, tc := range []struct {
		name, example string
		change        func(map[string]any)
	}{
		{"consent_changed without basis", "consent_changed", del("basis")},
		{"consent_changed without consent", "consent_changed", del("consent")},
		{"consent_changed with an empty basis", "consent_changed", set("basis", "")},
		{"consent_changed with a 201-character basis", "consent_changed", set("basis", strings.Repeat("b", 201))},
		{"consent_changed with status maybe", "consent_changed", set("status", "maybe")},
		{"consent_changed of channel fax", "consent_changed", set("channel", "fax")},
		{"consent_changed with a campaignId", "consent_changed", set("campaignId", rcm1)},
		{"consent_changed without accountId", "consent_changed", del("accountId")},
		{"consent_changed with a consent missing call", "consent_changed", func(m map[string]any) {
			delete(m["consent"].(map[string]any)["channels"].(map[string]any), "call")
		}},
		{"consent_changed with a revoked channel of no event", "consent_changed", func(m map[string]any) {
			m["consent"].(map[string]any)["channels"].(map[string]any)["sms"].(map[string]any)["eventId"] = nil
		}},
		{"opt_out with a consent without version", "opt_out with consent", func(m map[string]any) {
			delete(m["consent"].(map[string]any), "version")
		}},
		{"opt_out without campaignId", "opt_out without consent (older events)", del("campaignId")},
		{"contact_attempted without attemptId", "contact_attempted outbound", del("attemptId")},
		{"contact_attempted with a campaign's id as attemptId", "contact_attempted outbound", set("attemptId", rcm1)},
		{"contact_attempted outbound without campaignId", "contact_attempted outbound", del("campaignId")},
		{"contact_attempted sideways", "contact_attempted outbound", set("direction", "sideways")},
		{"contact_attempted of channel all", "contact_attempted outbound", set("channel", "all")},
		{"contact_attempted at a time with an offset", "contact_attempted outbound", set("attemptedAt", "2026-05-01T09:05:00.000-05:00")},
		{"contact_blocked without nextAllowedAt", "contact_blocked without nextAllowedAt", del("nextAllowedAt")},
		{"contact_blocked without reason", "contact_blocked with nextAllowedAt", del("reason")},
		{"contact_blocked because of the weather", "contact_blocked with nextAllowedAt", set("reason", "bad_weather")},
		{"contact_blocked with a loan_current reason", "contact_blocked with nextAllowedAt", set("reason", events.ReasonLoanCurrent)},
		{"contact_blocked without campaignId", "contact_blocked with nextAllowedAt", del("campaignId")},
		{"contact_outcome without outcomeAt", "contact_outcome call", del("outcomeAt")},
		{"contact_outcome of a call delivered", "contact_outcome call", set("outcome", contract.OutcomeDelivered)},
		{"contact_outcome of an email in conversation", "contact_outcome email without campaign", set("outcome", contract.OutcomeConversation)},
		{"contact_outcome unknown", "contact_outcome call", set("outcome", "hung_up")},
	} {
		e, ok := ex[tc.example]
		if !ok {
			t.Fatalf("%s: no example %q", tc.name, tc.example)
		}
		raw := mutate(t, encode(t, e), tc.change)
		if err := events.ValidateData(raw); !errors.Is(err, events.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed\n%s", tc.name, err, raw)
		}
	}
}

func TestUnknownTypeIsDistinguishable(t *testing.T) {
	t.Parallel()
	raw := mutate(t, encode(t, examples(t)["contact_outcome call"]), func(m map[string]any) { m["eventType"] = "contact_scheduled" })
	err := events.ValidateData(raw)
	if !errors.Is(err, events.ErrUnknownType) || !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("got %v, want ErrUnknownType, an ErrMalformed", err)
	}
	// A known type's violation is not an unknown type.
	raw = mutate(t, encode(t, examples(t)["contact_outcome call"]), func(m map[string]any) { delete(m, "outcome") })
	if err := events.ValidateData(raw); errors.Is(err, events.ErrUnknownType) || !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed only", err)
	}
}

// TestValidateDataOfOddEventTypes: data whose eventType is not plainly
// one string key gets the same verdict, and the same reason, as decoding
// it into a struct gives (json.Unmarshal matches keys case-insensitively,
// the last duplicate wins, null leaves the type empty): what the feed
// ignores (ErrUnknownType) and what every consumer parks stay the same.
func TestValidateDataOfOddEventTypes(t *testing.T) {
	t.Parallel()
	valid := encode(t, examples(t)["contact_outcome call"])
	body := string(valid[1 : len(valid)-1])
	for _, c := range []struct {
		name, raw string
		unknown   bool
		reason    string // a part of the error's text, or "valid"
	}{
		{"not JSON", `{"eventType":`, false, "not a JSON object"},
		{"an array", `[1]`, false, "not a JSON object"},
		{"a number as the type", `{"eventType":7}`, false, "not a JSON object"},
		{"null as the type", `{"eventType":null}`, true, `""`},
		{"no type", `{}`, true, `""`},
		{"a type of another case only", strings.Replace(string(valid), `"eventType"`, `"EVENTTYPE"`, 1), false, "contact_outcome.v1.json"},
		{"an unknown type after a known one", `{` + body + `,"EventType":"contact_scheduled"}`, true, "contact_scheduled"},
		{"a known type after an unknown one", `{"eventtype":"contact_scheduled",` + body + `}`, false, "valid"},
		{"trailing data", string(valid) + `{}`, false, "not a JSON object"},
	} {
		err := events.ValidateData([]byte(c.raw))
		if c.reason == "valid" {
			if err != nil {
				t.Errorf("%s: got %v, want valid", c.name, err)
			}
			continue
		}
		if !errors.Is(err, events.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", c.name, err)
			continue
		}
		if errors.Is(err, events.ErrUnknownType) != c.unknown {
			t.Errorf("%s: got %v, unknown type %v", c.name, err, c.unknown)
		}
		if err != nil && !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: got %v, want it to say %s", c.name, err, c.reason)
		}
	}
}

// load reads a schema file of the api module.
func load(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := fs.ReadFile(api.Files, "schemas/"+name)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func strs(t *testing.T, v any) []string {
	t.Helper()
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func prop(m map[string]any, name string) map[string]any {
	return m["properties"].(map[string]any)[name].(map[string]any)
}

// TestGoListsAreTheSchemas: the types, the reasons and the outcomes of the
// Go code are the schemas' enums, so that one cannot change alone.
func TestGoListsAreTheSchemas(t *testing.T) {
	t.Parallel()
	if got := strs(t, prop(load(t, "event.v1.json"), "eventType")["enum"]); !slices.Equal(got, events.Types()) {
		t.Errorf("event.v1.json eventType: got %v, events.Types() is %v", got, events.Types())
	}
	for _, typ := range events.Types() {
		s := load(t, typ+".v1.json")
		if c := prop(s, "eventType")["const"]; c != typ {
			t.Errorf("%s.v1.json: eventType const %v", typ, c)
		}
	}
	if got := strs(t, prop(load(t, "contact_blocked.v1.json"), "reason")["enum"]); !slices.Equal(got, events.ContactReasons()) {
		t.Errorf("contact_blocked.v1.json reason: got %v, events.ContactReasons() is %v", got, events.ContactReasons())
	}
	outcome := load(t, "contact_outcome.v1.json")
	call := strs(t, prop(outcome["then"].(map[string]any), "outcome")["enum"])
	other := strs(t, prop(outcome["else"].(map[string]any), "outcome")["enum"])
	if !slices.Equal(call, contract.Outcomes("call")) || !slices.Equal(other, contract.Outcomes("sms")) || !slices.Equal(other, contract.Outcomes("email")) {
		t.Errorf("contact_outcome.v1.json: call %v, others %v; Go has %v, %v", call, other, contract.Outcomes("call"), contract.Outcomes("sms"))
	}
	all := slices.Sorted(slices.Values(strs(t, prop(outcome, "outcome")["enum"])))
	want := slices.Compact(slices.Sorted(slices.Values(append(contract.Outcomes("call"), contract.Outcomes("sms")...))))
	if !slices.Equal(all, want) {
		t.Errorf("contact_outcome.v1.json outcome: got %v, want %v", all, want)
	}
}

func TestConsentSet(t *testing.T) {
	t.Parallel()
	c := events.NewConsent()
	if c.Version != 0 || c.Revoked("sms") || c.Revoked("email") || c.Revoked("call") {
		t.Fatalf("new consent %+v, want all granted at version 0", c)
	}
	first := revokedSMS(t)
	c = first
	// A repeat counts but changes nothing of the channel.
	if err := c.Set("sms", events.ConsentRevoked, events.SourceConsent, evt2, at); err != nil {
		t.Fatal(err)
	}
	if c.Version != 2 || c.Channels.SMS != first.Channels.SMS {
		t.Fatalf("after a repeat: %+v, want version 2 and sms as %+v", c, first.Channels.SMS)
	}
	// all revokes the other two, by this event.
	if err := c.Set("all", events.ConsentRevoked, events.SourceConsent, evt2, at); err != nil {
		t.Fatal(err)
	}
	want := events.ChannelConsent{Status: events.ConsentRevoked, ChangedAt: events.FormatTime(at), EventID: evt2, Source: events.SourceConsent}
	if c.Version != 3 || c.Channels.SMS != first.Channels.SMS || c.Channels.Email != want || c.Channels.Call != want {
		t.Fatalf("after all: %+v", c)
	}
	// A re-grant changes the channel.
	if err := c.Set("call", events.ConsentGranted, events.SourceConsent, evt1, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if c.Version != 4 || c.Revoked("call") || c.Channels.Call.EventID != evt1 || c.Channels.Call.ChangedAt != "2026-05-01T14:06:00.000Z" {
		t.Fatalf("after a re-grant: %+v", c)
	}
	for _, bad := range []struct{ channel, status string }{{"fax", events.ConsentRevoked}, {"sms", "maybe"}} {
		before := c
		if err := c.Set(bad.channel, bad.status, events.SourceConsent, evt1, at); err == nil || c != before {
			t.Errorf("Set(%q, %q): got %v and %+v, want an error and no change", bad.channel, bad.status, err, c)
		}
	}
}

func TestConsentRecord(t *testing.T) {
	t.Parallel()
	r := events.ConsentRecord{AccountID: "org_1", DocumentID: "doc_1", Consent: revokedSMS(t)}
	if r.Key() != "org_1/doc_1" {
		t.Fatalf("key %q, want org_1/doc_1", r.Key())
	}
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"accountId":"org_1","documentId":"doc_1","channels":{` +
		`"sms":{"status":"revoked","changedAt":"2026-05-01T13:05:00.000Z","eventId":"evt_01k0b2z9y8x7w6v5t3s2r1q0pn","source":"opt_out"},` +
		`"email":{"status":"granted","changedAt":null,"eventId":null,"source":null},` +
		`"call":{"status":"granted","changedAt":null,"eventId":null,"source":null}},"version":1}`
	if string(raw) != want {
		t.Fatalf("got %s\nwant %s", raw, want)
	}
	back, err := events.DecodeConsentRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	if back != r {
		t.Fatalf("decoded %+v, want %+v", back, r)
	}
	for name, change := range map[string]func(map[string]any){
		"no accountId":       func(m map[string]any) { delete(m, "accountId") },
		"no version":         func(m map[string]any) { delete(m, "version") },
		"a negative version": func(m map[string]any) { m["version"] = -1 },
		"a channel paused": func(m map[string]any) {
			m["channels"].(map[string]any)["email"].(map[string]any)["status"] = "paused"
		},
		"an extra channel": func(m map[string]any) {
			m["channels"].(map[string]any)["fax"] = map[string]any{"status": "granted", "changedAt": nil, "eventId": nil, "source": nil}
		},
		"a source of mail": func(m map[string]any) {
			m["channels"].(map[string]any)["sms"].(map[string]any)["source"] = "mail"
		},
	} {
		if _, err := events.DecodeConsentRecord(mutate(t, raw, change)); !errors.Is(err, events.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	newer := r
	newer.Version++
	if !newer.Supersedes(r) || r.Supersedes(newer) || r.Supersedes(r) {
		t.Fatal("the higher version must win, and only it")
	}
}
