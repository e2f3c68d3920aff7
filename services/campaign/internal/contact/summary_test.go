package contact

import (
	"testing"
	"time"
)

func TestSummary(t *testing.T) {
	t.Parallel()
	at := func(s string) *time.Time { v := ts(t, s); return &v }
	tests := []struct {
		name    string
		d       Decision
		channel string
		zone    string
		want    string
	}{
		{name: "allowed", d: Decision{Allowed: true}, channel: "call", zone: ny, want: "Call cleared"},
		{name: "call limit in Chicago, winter", channel: "call", zone: "America/Chicago",
			d:    Decision{Reason: ReasonCallFrequencyLimit, NextAllowedAt: at("2026-11-03T20:05:00Z")},
			want: "Call blocked: 7 calls in the last 7 days; next allowed Tue Nov 3 14:05 CST"},
		{name: "call limit in Chicago, summer", channel: "call", zone: "America/Chicago",
			d:    Decision{Reason: ReasonCallFrequencyLimit, NextAllowedAt: at("2026-06-16T19:05:00Z")},
			want: "Call blocked: 7 calls in the last 7 days; next allowed Tue Jun 16 14:05 CDT"},
		{name: "a next allowed instant between minutes rounds up", channel: "call", zone: ny,
			d:    Decision{Reason: ReasonConversationCooldown, NextAllowedAt: at("2026-06-16T18:05:00.001Z")},
			want: "Call blocked: conversation in the last 7 days; next allowed Tue Jun 16 14:06 EDT"},
		{name: "unknown zone shows UTC", channel: "sms", zone: "Nowhere/Special",
			d:    Decision{Reason: ReasonOutsideContactHours, NextAllowedAt: at("2026-06-16T18:00:00Z")},
			want: "SMS blocked: outside contact hours (8 a.m. to 9 p.m. local); next allowed Tue Jun 16 18:00 UTC"},
		{name: "state limit", channel: "sms", zone: "America/New_York",
			d:    Decision{Reason: ReasonStateFrequencyLimit, NextAllowedAt: at("2026-06-16T13:00:00Z")},
			want: "SMS blocked: state limit of calls and texts in the last 7 days; next allowed Tue Jun 16 09:00 EDT"},
		{name: "opted out has no next", channel: "email", zone: ny, d: Decision{Reason: ReasonOptedOut},
			want: "Email blocked: borrower opted out of emails"},
		{name: "not in campaign", channel: "sms", d: Decision{Reason: ReasonChannelNotInCampaign},
			want: "SMS blocked: campaign not started with texts"},
		{name: "campaign inactive", channel: "call", d: Decision{Reason: ReasonCampaignInactive}, want: "Call blocked: campaign not active"},
		{name: "loan not behind", channel: "call", d: Decision{Reason: ReasonLoanNotBehind}, want: "Call blocked: loan not behind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Summary(tt.d, tt.channel, tt.zone); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestSummaryOfEvaluate reads a decision of Evaluate back, end to end: the
// oldest of 7 calls leaves at 07:00 CDT, outside contact hours, so the next
// call waits for 08:00 CDT.
func TestSummaryOfEvaluate(t *testing.T) {
	t.Parallel()
	f := baseFacts()
	f.TimeZone = "America/Chicago"
	f.History = sent("call", f.At, hours(7, 100*time.Hour, 10*time.Hour)...)
	got := Summary(Evaluate(f), f.Channel, f.TimeZone)
	want := "Call blocked: 7 calls in the last 7 days; next allowed Sat Jun 13 08:00 CDT"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestValidOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		channel, outcome string
		want             bool
	}{
		{"call", "no_answer", true},
		{"call", "voicemail", true},
		{"call", "conversation", true},
		{"call", "failed", true},
		{"call", "delivered", false},
		{"call", "bounced", false},
		{"sms", "delivered", true},
		{"sms", "bounced", true},
		{"sms", "failed", true},
		{"sms", "conversation", false},
		{"sms", "voicemail", false},
		{"email", "delivered", true},
		{"email", "bounced", true},
		{"email", "failed", true},
		{"email", "no_answer", false},
		{"call", "", false},
		{"call", "Conversation", false},
		{"all", "failed", false},
		{"fax", "delivered", false},
	}
	for _, tt := range tests {
		t.Run(tt.channel+"/"+tt.outcome, func(t *testing.T) {
			t.Parallel()
			if got := ValidOutcome(tt.channel, tt.outcome); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestValidChannelAndDirection(t *testing.T) {
	t.Parallel()
	for _, ch := range []string{"sms", "email", "call"} {
		if !ValidChannel(ch) {
			t.Errorf("ValidChannel(%q) = false, want true", ch)
		}
	}
	for _, ch := range []string{"all", "", "Call", "fax"} {
		if ValidChannel(ch) {
			t.Errorf("ValidChannel(%q) = true, want false", ch)
		}
	}
	if !ValidDirection("outbound") || !ValidDirection("inbound") || ValidDirection("") || ValidDirection("Outbound") {
		t.Error("ValidDirection accepts exactly outbound and inbound")
	}
}
