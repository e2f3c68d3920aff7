package activity

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/rcm-platform/rcm/pkg/events"
)

func ptr[T any](v T) *T { return &v }

func base(typ string) events.Event {
	return events.Event{
		EventID:    "evt_01jsz8k5w4q4c7f3x1y2z3a4b5",
		EventType:  typ,
		AccountID:  "org_1",
		DocumentID: "doc_123",
		CampaignID: "rcm_01jsz8k5w4q4c7f3x1y2z3a4b6",
		Actor:      events.Actor{Type: events.ActorUser, ID: "user_1", SessionID: "sess_1"},
		OccurredAt: "2026-04-27T10:00:00.123Z",
	}
}

func started(sms, email, call bool) events.Event {
	e := base(events.TypeCampaignStarted)
	e.Campaign = &events.CampaignRecord{SMS: sms, Email: email, Call: call}
	return e
}

func optOut(channel string, deactivated, active bool) events.Event {
	e := base(events.TypeOptOut)
	e.Channel = channel
	e.Notes = "borrower said: call me at 555-0100"
	e.Deactivated = &deactivated
	e.Active = &active
	return e
}

func ended(reason string, status *string) events.Event {
	e := base(events.TypeCampaignEnded)
	e.Reason = reason
	e.LoanStatus = status
	e.Actor = events.Actor{Type: events.ActorSystem, ID: "rcm/campaign"}
	return e
}

func consentChanged(channel, status, basis string) events.Event {
	e := base(events.TypeConsentChanged)
	e.CampaignID = ""
	e.Channel, e.Status, e.Basis = channel, status, basis
	e.Notes = "borrower said: call me at 555-0100"
	return e
}

func attempted(channel, direction string) events.Event {
	e := base(events.TypeContactAttempted)
	e.AttemptID, e.Channel, e.Direction, e.AttemptedAt = "att_01jsz8k5w4q4c7f3x1y2z3a4b7", channel, direction, e.OccurredAt
	e.Notes = "borrower said: call me at 555-0100"
	return e
}

func blocked(channel, reason string, next *string) events.Event {
	e := base(events.TypeContactBlocked)
	e.AttemptID, e.Channel, e.Reason, e.NextAllowedAt = "att_01jsz8k5w4q4c7f3x1y2z3a4b7", channel, reason, next
	return e
}

func outcome(channel, o string) events.Event {
	e := base(events.TypeContactOutcome)
	e.AttemptID, e.Channel, e.Outcome, e.OutcomeAt = "att_01jsz8k5w4q4c7f3x1y2z3a4b7", channel, o, e.OccurredAt
	e.Notes = "borrower said: call me at 555-0100"
	return e
}

func TestSummary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		e    events.Event
		want string
	}{
		{"started via sms and email", started(true, true, false), "Campaign started on doc_123 via SMS and email"},
		{"started via one channel", started(false, false, true), "Campaign started on doc_123 via call"},
		{"started via all three", started(true, true, true), "Campaign started on doc_123 via SMS, email and call"},
		{"started without a record", base(events.TypeCampaignStarted), "Campaign started on doc_123"},
		{"opt-out of one channel", optOut("sms", false, true), "Borrower opted out of SMS"},
		{"opt-out of email", optOut("email", false, true), "Borrower opted out of email"},
		{"opt-out of all", optOut("all", true, false), "Borrower opted out of all channels; campaign deactivated"},
		{"opt-out of the last channel", optOut("call", true, false), "Borrower opted out of call; campaign deactivated (no channel left)"},
		{"opt-out on an inactive campaign", optOut("sms", false, false), "Borrower opted out of SMS; campaign already inactive"},
		{"opt-out of all on an inactive campaign", optOut("all", false, false), "Borrower opted out of all channels; campaign already inactive"},
		{"ended, loan current", ended(events.ReasonLoanCurrent, ptr("CURRENT")), "Campaign ended: the loan is CURRENT"},
		{"ended, loan removed", ended(events.ReasonLoanRemoved, nil), "Campaign ended: the loan was removed"},
		{"ended, status changed", ended(events.ReasonLoanStatusChanged, ptr("PAID_OFF")), "Campaign ended: the loan status changed to PAID_OFF"},
		{"ended, status changed to nothing", ended(events.ReasonLoanStatusChanged, nil), "Campaign ended: the loan status changed"},
		{"sms consent revoked", consentChanged("sms", "revoked", "Borrower texted STOP"), "SMS consent revoked: Borrower texted STOP"},
		{"call consent granted", consentChanged("call", "granted", "Borrower called to allow calls"), "Call consent granted: Borrower called to allow calls"},
		{"email consent revoked", consentChanged("email", "revoked", "Letter of 2026-05-01"), "Email consent revoked: Letter of 2026-05-01"},
		{"all consent revoked", consentChanged("all", "revoked", "Cease and desist letter"), "Consent for all channels revoked: Cease and desist letter"},
		{"call placed", attempted("call", "outbound"), "Call placed"},
		{"sms sent", attempted("sms", "outbound"), "SMS sent"},
		{"email sent", attempted("email", "outbound"), "Email sent"},
		{"inbound sms", attempted("sms", "inbound"), "Inbound SMS recorded"},
		{"inbound call", attempted("call", "inbound"), "Inbound call recorded"},
		{"call limit", blocked("call", events.ReasonCallFrequencyLimit, ptr("2026-05-05T19:05:00.000Z")), "Call blocked: 7 calls in the last 7 days; next allowed Tue 5 May 19:05 UTC"},
		{"conversation cooldown", blocked("call", events.ReasonConversationCooldown, ptr("2026-05-04T14:05:00.000Z")), "Call blocked: a conversation in the last 7 days; next allowed Mon 4 May 14:05 UTC"},
		{"outside hours", blocked("sms", events.ReasonOutsideContactHours, ptr("2026-04-28T12:00:00.000Z")), "SMS blocked: outside the borrower's contact hours (8 a.m. to 9 p.m.); next allowed Tue 28 Apr 12:00 UTC"},
		{"state limit", blocked("sms", events.ReasonStateFrequencyLimit, ptr("2026-05-01T10:00:00.000Z")), "SMS blocked: the borrower's state limit of contacts in 7 days; next allowed Fri 1 May 10:00 UTC"},
		{"opted out", blocked("email", events.ReasonOptedOut, nil), "Email blocked: the borrower opted out of email"},
		{"campaign inactive", blocked("call", events.ReasonCampaignInactive, nil), "Call blocked: the campaign is not active"},
		{"loan not behind", blocked("call", events.ReasonLoanNotBehind, nil), "Call blocked: the loan is not BEHIND"},
		{"channel not in campaign", blocked("sms", events.ReasonChannelNotInCampaign, nil), "SMS blocked: the campaign was not started with SMS"},
		{"a reason added later", blocked("sms", "quiet_day", nil), "SMS blocked: quiet day"},
		{"call conversation", outcome("call", "conversation"), "Call outcome: conversation"},
		{"call no answer", outcome("call", "no_answer"), "Call outcome: no answer"},
		{"sms delivered", outcome("sms", "delivered"), "SMS outcome: delivered"},
		{"email bounced", outcome("email", "bounced"), "Email outcome: bounced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Summary(tt.e)
			if err != nil {
				t.Fatalf("got error %v, want %q", err, tt.want)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if strings.Contains(got, "555") || strings.Contains(got, "borrower said") {
				t.Fatalf("summary %q repeats the notes", got)
			}
		})
	}
}

func TestSummaryUnknownType(t *testing.T) {
	t.Parallel()
	_, err := Summary(base("campaign_paused"))
	if !errors.Is(err, events.ErrUnknownType) {
		t.Fatalf("got %v, want ErrUnknownType: a type added later is ignored, not parked", err)
	}
}

func TestItemJSON(t *testing.T) {
	t.Parallel()
	it, err := FromEvent(optOut("sms", false, true))
	if err != nil {
		t.Fatal(err)
	}
	it.Seq = 42
	got, err := json.Marshal(it)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"evt_01jsz8k5w4q4c7f3x1y2z3a4b5","cursor":"42","type":"opt_out","documentId":"doc_123",` +
		`"campaignId":"rcm_01jsz8k5w4q4c7f3x1y2z3a4b6","summary":"Borrower opted out of SMS",` +
		`"occurredAt":"2026-04-27T10:00:00.123Z","actor":{"type":"user","id":"user_1","sessionId":"sess_1"}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var back Item
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if back != it {
		t.Fatalf("round trip: got %+v, want %+v", back, it)
	}
}

func TestParseCursor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"123456", 123456, true},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"01", 0, false},
		{"1.5", 0, false},
		{"abc", 0, false},
		{"1234567890123456789", 0, false},
		{" 1", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseCursor(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseCursor(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}
