package contact

import (
	"slices"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
)

const (
	ny      = "America/New_York"
	phoenix = "America/Phoenix"
)

// ts parses an RFC 3339 instant of a test case.
func ts(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("bad instant %q: %v", s, err)
	}
	return v
}

// noon is a Wednesday at 12:00 in New York (EDT), well inside contact hours
// there and in every fallback zone but Honolulu.
var noon = time.Date(2026, 6, 10, 16, 0, 0, 0, time.UTC)

func baseFacts() Facts {
	return Facts{
		At:         noon,
		Channel:    "call",
		Campaign:   &Campaign{Active: true, Channels: []string{"sms", "email", "call"}},
		LoanBehind: true,
		TimeZone:   ny,
	}
}

// sent returns allowed outbound attempts on channel, one per ago, each
// attempted that long before at.
func sent(channel string, at time.Time, ago ...time.Duration) []Attempt {
	out := make([]Attempt, len(ago))
	for i, d := range ago {
		out[i] = Attempt{Channel: channel, Direction: Outbound, Allowed: true, AttemptedAt: at.Add(-d)}
	}
	return out
}

// hours returns n durations: first, first-step, first-2*step, ...
func hours(n int, first, step time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = first - time.Duration(i)*step
	}
	return out
}

func with(h []Attempt, f func(*Attempt)) []Attempt {
	for i := range h {
		f(&h[i])
	}
	return h
}

func TestEvaluate(t *testing.T) {
	t.Parallel()
	h := time.Hour
	// seven calls of the window: the oldest 100 h ago, then one every 10 h.
	seven := sent("call", noon, hours(7, 100*h, 10*h)...)
	six := seven[1:]
	conversation := func(ago time.Duration) Attempt {
		return Attempt{Channel: "call", Direction: Outbound, Allowed: true, AttemptedAt: noon.Add(-ago - time.Minute),
			Outcome: contract.OutcomeConversation, OutcomeAt: noon.Add(-ago)}
	}
	tests := []struct {
		name   string
		facts  func(f *Facts)
		reason Reason // empty: allowed
		next   string // RFC 3339, empty: nil
	}{
		{name: "a call in hours with nothing recorded", facts: func(*Facts) {}},

		// Rule order: the first rule that fails is the reason.
		{name: "campaign inactive", facts: func(f *Facts) { f.Campaign.Active = false }, reason: ReasonCampaignInactive},
		{name: "campaign inactive before loan not behind", facts: func(f *Facts) { f.Campaign.Active = false; f.LoanBehind = false }, reason: ReasonCampaignInactive},
		{name: "loan not behind", facts: func(f *Facts) { f.LoanBehind = false }, reason: ReasonLoanNotBehind},
		{name: "loan not behind before opted out", facts: func(f *Facts) { f.LoanBehind = false; f.Revoked = []string{"call"} }, reason: ReasonLoanNotBehind},
		{name: "revoked on the document", facts: func(f *Facts) { f.Revoked = []string{"call"} }, reason: ReasonOptedOut},
		{name: "another channel revoked", facts: func(f *Facts) { f.Revoked = []string{"sms", "email"} }},
		{name: "all revoked on the document", facts: func(f *Facts) { f.Revoked = []string{"all"} }, reason: ReasonOptedOut},
		{name: "all opted out by an active campaign", facts: func(f *Facts) { f.Campaign.OptedOut = []string{"all"} }, reason: ReasonOptedOut},
		{name: "opted out by the campaign", facts: func(f *Facts) { f.Campaign.OptedOut = []string{"call"} }, reason: ReasonOptedOut},
		{name: "opted out before channel not in campaign", facts: func(f *Facts) { f.Revoked = []string{"call"}; f.Campaign.Channels = []string{"sms"} }, reason: ReasonOptedOut},
		{name: "channel not in campaign", facts: func(f *Facts) { f.Campaign.Channels = []string{"sms", "email"} }, reason: ReasonChannelNotInCampaign},
		{name: "opted out before outside contact hours", facts: func(f *Facts) {
			f.Revoked = []string{"call"}
			f.At = ts(t, "2026-06-10T03:00:00Z") // 23:00 EDT
		}, reason: ReasonOptedOut},
		{name: "channel not in campaign before outside contact hours", facts: func(f *Facts) {
			f.Campaign.Channels = []string{"sms"}
			f.At = ts(t, "2026-06-10T03:00:00Z")
		}, reason: ReasonChannelNotInCampaign},
		{name: "outside contact hours before call limit, next allowed passes both", facts: func(f *Facts) {
			f.At = ts(t, "2026-06-10T03:00:00Z")                              // 23:00 EDT
			f.History = sent("call", f.At, 1*h, 2*h, 3*h, 4*h, 5*h, 6*h, 7*h) // oldest leaves 2026-06-16T20:00Z
		}, reason: ReasonOutsideContactHours, next: "2026-06-16T20:00:00Z"},
		{name: "call limit before conversation cooldown, next allowed passes both", facts: func(f *Facts) {
			f.History = append(slices.Clone(seven), conversation(50*h))
		}, reason: ReasonCallFrequencyLimit, next: "2026-06-15T14:00:00Z"}, // conversation at 2026-06-08T14:00Z + 168 h
		{name: "conversation cooldown before state limit", facts: func(f *Facts) {
			f.State = "MA"
			f.History = append(sent("sms", noon, 1*h, 2*h), conversation(3*h))
		}, reason: ReasonConversationCooldown, next: "2026-06-17T14:00:00Z"}, // the cooldown ends at 13:00Z, then the texts of 14:00Z and 15:00Z and the conversation's call are 3 in MA's window

		// Clearance without a campaign.
		{name: "no campaign: an inactive campaign's rules are not asked", facts: func(f *Facts) { f.Campaign = nil }},
		{name: "no campaign: a channel no campaign started with", facts: func(f *Facts) { f.Campaign = nil; f.Channel = "email" }},
		{name: "no campaign: the document's revocation holds", facts: func(f *Facts) { f.Campaign = nil; f.Revoked = []string{"call"} }, reason: ReasonOptedOut},
		{name: "no campaign: the loan rule holds", facts: func(f *Facts) { f.Campaign = nil; f.LoanBehind = false }, reason: ReasonLoanNotBehind},
		{name: "no campaign: the limits hold", facts: func(f *Facts) { f.Campaign = nil; f.History = seven }, reason: ReasonCallFrequencyLimit, next: "2026-06-13T12:00:00Z"},

		// The call limit: 7 allowed outbound calls in the window.
		{name: "6 calls in the window: the 7th is allowed", facts: func(f *Facts) { f.History = six }},
		{name: "7 calls in the window: the 8th is blocked until the oldest leaves", facts: func(f *Facts) { f.History = seven },
			reason: ReasonCallFrequencyLimit, next: "2026-06-13T12:00:00Z"}, // noon - 100 h + 168 h, 08:00 EDT
		{name: "8 calls in the window: blocked until the two oldest leave", facts: func(f *Facts) {
			f.History = sent("call", noon, hours(8, 100*h, 10*h)...)
		}, reason: ReasonCallFrequencyLimit, next: "2026-06-13T22:00:00Z"}, // noon - 90 h + 168 h
		{name: "7 calls, the oldest leaving outside contact hours: pushed to 08:00 local", facts: func(f *Facts) {
			f.History = sent("call", noon, hours(7, 158*h, 10*h)...) // the oldest leaves noon + 10 h, 22:00 EDT
		}, reason: ReasonCallFrequencyLimit, next: "2026-06-11T12:00:00Z"},
		{name: "window boundary: a call exactly 168 h before does not count", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), sent("call", noon, 168*h)...)
		}},
		{name: "window boundary: a call 1 ms inside counts", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), sent("call", noon, 168*h-time.Millisecond)...)
		}, reason: ReasonCallFrequencyLimit, next: "2026-06-10T16:00:00.001Z"},
		{name: "window boundary: a call 1 ns inside counts", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), sent("call", noon, 168*h-time.Nanosecond)...)
		}, reason: ReasonCallFrequencyLimit, next: "2026-06-10T16:00:00.000000001Z"},
		{name: "window boundary: a call at the evaluation instant counts", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), sent("call", noon, 0)...)
		}, reason: ReasonCallFrequencyLimit, next: "2026-06-13T22:00:00Z"}, // six's oldest, noon - 90 h, leaves
		{name: "window boundary: a call after the evaluation instant does not count at it", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), sent("call", noon, -time.Millisecond)...)
		}},
		{name: "blocked calls do not count", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), with(sent("call", noon, 1*h, 2*h, 3*h), func(a *Attempt) { a.Allowed = false })...)
		}},
		{name: "inbound calls do not count", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), with(sent("call", noon, 1*h, 2*h, 3*h), func(a *Attempt) { a.Direction = Inbound })...)
		}},
		{name: "an attempt without a direction is outbound and counts", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), with(sent("call", noon, 1*h), func(a *Attempt) { a.Direction = "" })...)
		}, reason: ReasonCallFrequencyLimit, next: "2026-06-13T22:00:00Z"},
		{name: "texts do not count toward the call limit", facts: func(f *Facts) {
			f.History = append(slices.Clone(six), sent("sms", noon, 1*h, 2*h, 3*h)...)
		}},
		{name: "the call limit does not limit email", facts: func(f *Facts) { f.Channel = "email"; f.History = seven }},
		// History carries no campaign: attempts of an ended campaign are
		// recorded for the document and count like any other.
		{name: "calls of ended campaigns count", facts: func(f *Facts) { f.Campaign = &Campaign{Active: true, Channels: []string{"call"}}; f.History = seven },
			reason: ReasonCallFrequencyLimit, next: "2026-06-13T12:00:00Z"},

		// The conversation cooldown.
		{name: "a conversation in the window blocks calls", facts: func(f *Facts) { f.History = []Attempt{conversation(24 * h)} },
			reason: ReasonConversationCooldown, next: "2026-06-16T16:00:00Z"},
		{name: "the latest conversation sets the end of the cooldown", facts: func(f *Facts) {
			f.History = []Attempt{conversation(24 * h), conversation(48 * h)}
		}, reason: ReasonConversationCooldown, next: "2026-06-16T16:00:00Z"},
		{name: "the cooldown counts from the outcome, not the attempt", facts: func(f *Facts) {
			c := conversation(167 * h)
			c.AttemptedAt = noon.Add(-170 * h)
			f.History = []Attempt{c}
		}, reason: ReasonConversationCooldown, next: "2026-06-10T17:00:00Z"},
		{name: "a conversation exactly 168 h before has left", facts: func(f *Facts) { f.History = []Attempt{conversation(168 * h)} }},
		{name: "an inbound conversation starts the cooldown", facts: func(f *Facts) {
			c := conversation(24 * h)
			c.Direction = Inbound
			f.History = []Attempt{c}
		}, reason: ReasonConversationCooldown, next: "2026-06-16T16:00:00Z"},
		{name: "a voicemail starts no cooldown", facts: func(f *Facts) {
			c := conversation(24 * h)
			c.Outcome = contract.OutcomeVoicemail
			f.History = []Attempt{c}
		}},
		{name: "the cooldown does not limit texts", facts: func(f *Facts) { f.Channel = "sms"; f.History = []Attempt{conversation(24 * h)} }},
		{name: "the cooldown ending outside contact hours: pushed to 08:00 local", facts: func(f *Facts) {
			f.History = []Attempt{conversation(158 * h)} // ends noon + 10 h, 22:00 EDT
		}, reason: ReasonConversationCooldown, next: "2026-06-11T12:00:00Z"},

		// The MA rule pack: 2 allowed outbound calls and texts together.
		{name: "MA: a call and a text block a text", facts: func(f *Facts) {
			f.State, f.Channel = "MA", "sms"
			f.History = append(sent("call", noon, 10*h), sent("sms", noon, 20*h)...)
		}, reason: ReasonStateFrequencyLimit, next: "2026-06-16T20:00:00Z"},
		{name: "MA: a call and a text block a call", facts: func(f *Facts) {
			f.State = "MA"
			f.History = append(sent("call", noon, 10*h), sent("sms", noon, 20*h)...)
		}, reason: ReasonStateFrequencyLimit, next: "2026-06-16T20:00:00Z"},
		{name: "MA: email is not limited", facts: func(f *Facts) {
			f.State, f.Channel = "MA", "email"
			f.History = append(sent("call", noon, 10*h), sent("sms", noon, 20*h)...)
		}},
		{name: "MA: emails do not count", facts: func(f *Facts) {
			f.State = "MA"
			f.History = append(sent("call", noon, 10*h), sent("email", noon, 1*h, 2*h, 3*h)...)
		}},
		{name: "MA: a blocked and an inbound call do not count", facts: func(f *Facts) {
			f.State = "MA"
			f.History = append(sent("call", noon, 10*h),
				Attempt{Channel: "call", Direction: Outbound, AttemptedAt: noon.Add(-time.Hour)},
				Attempt{Channel: "sms", Direction: Inbound, Allowed: true, AttemptedAt: noon.Add(-time.Hour)})
		}},
		{name: "MA: 3 in the window wait for the 2 oldest", facts: func(f *Facts) {
			f.State = "MA"
			f.History = sent("sms", noon, 30*h, 20*h, 10*h)
		}, reason: ReasonStateFrequencyLimit, next: "2026-06-16T20:00:00Z"},
		{name: "MA: written in lower case", facts: func(f *Facts) {
			f.State = " ma "
			f.History = sent("sms", noon, 20*h, 10*h)
		}, reason: ReasonStateFrequencyLimit, next: "2026-06-16T20:00:00Z"},
		{name: "another state has no pack", facts: func(f *Facts) {
			f.State = "NY"
			f.History = sent("sms", noon, 20*h, 10*h)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := baseFacts()
			tt.facts(&f)
			got := Evaluate(f)
			want := Decision{Allowed: tt.reason == "", Reason: tt.reason}
			if tt.next != "" {
				n := ts(t, tt.next)
				want.NextAllowedAt = &n
			}
			if !sameDecision(got, want) {
				t.Fatalf("got %s, want %s", show(got), show(want))
			}
			if got.Allowed != (got.Reason == "") || (got.NextAllowedAt != nil) != (!got.Allowed && got.Reason.Fixable()) {
				t.Fatalf("inconsistent decision %s", show(got))
			}
		})
	}
}

func sameDecision(a, b Decision) bool {
	if a.Allowed != b.Allowed || a.Reason != b.Reason || (a.NextAllowedAt == nil) != (b.NextAllowedAt == nil) {
		return false
	}
	return a.NextAllowedAt == nil || a.NextAllowedAt.Equal(*b.NextAllowedAt)
}

func show(d Decision) string {
	next := "null"
	if d.NextAllowedAt != nil {
		next = d.NextAllowedAt.UTC().Format(time.RFC3339Nano)
	}
	if d.Allowed {
		return "allowed (next " + next + ")"
	}
	return "blocked " + string(d.Reason) + " next " + next
}

func TestNextAllowedAtIsUTC(t *testing.T) {
	t.Parallel()
	f := baseFacts()
	f.At = ts(t, "2026-06-10T03:00:00Z")
	d := Evaluate(f)
	if d.NextAllowedAt == nil || d.NextAllowedAt.Location() != time.UTC {
		t.Fatalf("got %s, want a next allowed instant in UTC", show(d))
	}
}

// BenchmarkEvaluate is a clearance of a busy document: a week of calls and
// texts in the borrower's zone, blocked by the call limit.
func BenchmarkEvaluate(b *testing.B) {
	f := baseFacts()
	for i := range 40 {
		ch := []string{"call", "sms"}[i%2]
		f.History = append(f.History, sent(ch, f.At, time.Duration(i)*4*time.Hour)...)
	}
	if d := Evaluate(f); d.Allowed {
		b.Fatalf("got %s, want blocked", show(d))
	}
	for b.Loop() {
		Evaluate(f)
	}
}

// BenchmarkEvaluateFallback is the same with an unknown zone.
func BenchmarkEvaluateFallback(b *testing.B) {
	f := baseFacts()
	f.TimeZone = "Nowhere/Special"
	f.At = ts(b, "2026-06-10T03:00:00Z")
	for b.Loop() {
		Evaluate(f)
	}
}
