package contact

import (
	"strconv"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
)

// summaryLayout shows a next allowed instant to a person: the date makes it
// unambiguous though it may be more than a week away.
const summaryLayout = "Mon Jan 2 15:04 MST"

// Summary says a decision in one line for people, e.g. "Call blocked: 7
// calls in the last 7 days; next allowed Tue Nov 3 14:05 CST". The next
// allowed instant is shown in the borrower's zone, or in UTC when the zone
// is absent or unknown (the fallback hours are a UTC range), rounded up to
// the minute so that a person acting at the time shown is never early.
func Summary(d Decision, channel, timeZone string) string {
	label := channelLabel(channel)
	if d.Allowed {
		return label + " cleared"
	}
	s := label + " blocked: " + why(d.Reason, channel)
	if d.NextAllowedAt != nil {
		loc, ok := Location(timeZone)
		if !ok {
			loc = time.UTC
		}
		next := *d.NextAllowedAt
		if m := next.Truncate(time.Minute); !m.Equal(next) {
			next = m.Add(time.Minute)
		}
		s += "; next allowed " + next.In(loc).Format(summaryLayout)
	}
	return s
}

func channelLabel(channel string) string {
	switch channel {
	case contract.ChannelCall:
		return "Call"
	case contract.ChannelSMS:
		return "SMS"
	case contract.ChannelEmail:
		return "Email"
	}
	return "Contact"
}

// plural names what is sent on channel, as counted.
func plural(channel string) string {
	switch channel {
	case contract.ChannelCall:
		return "calls"
	case contract.ChannelSMS:
		return "texts"
	case contract.ChannelEmail:
		return "emails"
	}
	return "contacts"
}

func why(r Reason, channel string) string {
	switch r {
	case ReasonCampaignInactive:
		return "campaign not active"
	case ReasonLoanNotBehind:
		return "loan not behind"
	case ReasonOptedOut:
		return "borrower opted out of " + plural(channel)
	case ReasonChannelNotInCampaign:
		return "campaign not started with " + plural(channel)
	case ReasonOutsideContactHours:
		return "outside contact hours (8 a.m. to 9 p.m. local)"
	case ReasonCallFrequencyLimit:
		return strconv.Itoa(CallLimit) + " calls in the last 7 days"
	case ReasonConversationCooldown:
		return "conversation in the last 7 days"
	case ReasonStateFrequencyLimit:
		return "state limit of calls and texts in the last 7 days"
	}
	return string(r)
}
