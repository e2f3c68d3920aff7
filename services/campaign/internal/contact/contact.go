// Package contact holds the contact clearance rules: whether an outbound
// contact on a channel is allowed at an instant, given the campaign, the
// loan, the document's consent, the borrower's time zone and state, and the
// attempts recorded for the document; and, when it is not, the earliest
// instant at which it will be. It also knows the outcomes an attempt may
// take. It does no I/O and reads no clock: the caller passes the evaluation
// instant and everything recorded.
//
// Readings where the contract leaves room:
//   - a conversation outcome starts the cooldown whatever the attempt's
//     direction or campaign; an attempt without a direction is outbound;
//   - an attempt after the evaluation instant (a dry run in the past) is,
//     by the window's definition, not in its window, but is when the next
//     allowed instant is sought;
//   - "all" among the document's revocations or the campaign's opt-outs
//     covers every channel;
//   - a state's rule pack limits only the channels it counts (MA: calls
//     and texts, not email), and the state code is matched trimmed and in
//     any case;
//   - a zone name is looked up as written (IANA names are case-sensitive);
//     "Local" is not a zone; a name not found means every US zone.
package contact

import (
	"slices"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
)

// Reason names the rule that denied a contact, as the contract spells it.
type Reason string

// Reasons, in the order Evaluate checks their rules.
const (
	ReasonCampaignInactive     Reason = "campaign_inactive"
	ReasonLoanNotBehind        Reason = "loan_not_behind"
	ReasonOptedOut             Reason = "opted_out"
	ReasonChannelNotInCampaign Reason = "channel_not_in_campaign"
	ReasonOutsideContactHours  Reason = "outside_contact_hours"
	ReasonCallFrequencyLimit   Reason = "call_frequency_limit"
	ReasonConversationCooldown Reason = "conversation_cooldown"
	ReasonStateFrequencyLimit  Reason = "state_frequency_limit"
)

// Reasons returns every reason in the order Evaluate checks its rule.
func Reasons() []Reason {
	return []Reason{
		ReasonCampaignInactive, ReasonLoanNotBehind, ReasonOptedOut, ReasonChannelNotInCampaign,
		ReasonOutsideContactHours, ReasonCallFrequencyLimit, ReasonConversationCooldown, ReasonStateFrequencyLimit,
	}
}

// Fixable reports whether time alone can lift a denial for r, that is,
// whether a blocked decision for r carries a NextAllowedAt.
func (r Reason) Fixable() bool {
	switch r {
	case ReasonOutsideContactHours, ReasonCallFrequencyLimit, ReasonConversationCooldown, ReasonStateFrequencyLimit:
		return true
	}
	return false
}

// Directions of an attempt. An empty direction counts as Outbound, the
// contract's default.
const (
	Outbound = "outbound"
	Inbound  = "inbound"
)

// ValidDirection reports whether d is a direction a request may name.
func ValidDirection(d string) bool { return d == Outbound || d == Inbound }

// ValidChannel reports whether ch is a channel of outreach.
func ValidChannel(ch string) bool { return slices.Contains(contract.Channels(), ch) }

// Window is the length of the rolling window of the limits and the
// cooldown: the window at t holds what happened at s with
// t - Window < s <= t. Rolling 168 hours are stricter than Regulation F's
// seven consecutive days (12 CFR 1006.14(b)(2)).
const Window = 168 * time.Hour

// InWindow reports whether an instant s falls in the window at t.
func InWindow(s, t time.Time) bool { return s.After(t.Add(-Window)) && !s.After(t) }

// CallLimit is how many allowed outbound calls the window may hold before
// the next call is denied (Regulation F, 12 CFR 1006.14(b)(2)(i)).
const CallLimit = 7

// Campaign is what the rules need of the campaign a contact is made for.
type Campaign struct {
	Active   bool
	Channels []string // the channels it was started with
	OptedOut []string // its own opt-outs ("all": every channel)
}

// Attempt is one recorded contact attempt of the document, of any campaign,
// ended ones included.
type Attempt struct {
	Channel     string
	Direction   string // Outbound (or empty) or Inbound
	Allowed     bool   // false for a blocked attempt
	AttemptedAt time.Time
	Outcome     string    // empty when none
	OutcomeAt   time.Time // zero when none
}

// counts reports whether a counts toward the frequency limits: allowed and
// outbound. Blocked attempts and inbound contacts never do.
func (a Attempt) counts() bool { return a.Allowed && a.Direction != Inbound }

// Facts is everything a clearance is decided on.
type Facts struct {
	At      time.Time // the evaluation instant
	Channel string    // sms, email or call
	// Campaign is nil for a clearance without a campaign: the campaign's
	// rules are skipped (campaign_inactive, channel_not_in_campaign and the
	// campaign's own opt-outs in opted_out).
	Campaign   *Campaign
	LoanBehind bool     // the document's loan exists and is BEHIND
	Revoked    []string // the channels revoked on the document ("all": every one)
	TimeZone   string   // the borrower's IANA zone; empty or unknown: every US zone
	State      string   // the borrower's state, e.g. "MA"; may be empty
	// History is what is recorded for the document: at least every attempt
	// attempted or given an outcome after At - Window. Attempts after At
	// (a clearance evaluated in the past) do not count at At but do when
	// NextAllowedAt is looked for. Its instants are whole milliseconds, as
	// recorded, so that NextAllowedAt is one too.
	History []Attempt
}

// Decision is the answer to a clearance.
type Decision struct {
	Allowed bool
	Reason  Reason // empty when allowed
	// NextAllowedAt is, for a blocked decision, the earliest instant >= At
	// at which every rule passes given the same history; nil when allowed
	// or when a rule time cannot fix denied it. It is in UTC.
	NextAllowedAt *time.Time
}

// Evaluate decides an outbound contact. Rules are checked in the
// contract's order; the first that fails is the reason. Inbound contacts
// are never blocked and are not evaluated.
func Evaluate(f Facts) Decision {
	if r, failed := standing(f); failed {
		return Decision{Reason: r}
	}
	zones := zonesOf(f.TimeZone)
	r, failed := timed(f, zones, f.At)
	if !failed {
		return Decision{Allowed: true}
	}
	next := nextAllowed(f, zones).UTC()
	return Decision{Reason: r, NextAllowedAt: &next}
}

// standing checks the rules that time cannot change.
func standing(f Facts) (Reason, bool) {
	c := f.Campaign
	switch {
	case c != nil && !c.Active:
		return ReasonCampaignInactive, true
	case !f.LoanBehind:
		return ReasonLoanNotBehind, true
	case covers(f.Revoked, f.Channel), c != nil && covers(c.OptedOut, f.Channel):
		return ReasonOptedOut, true
	case c != nil && !slices.Contains(c.Channels, f.Channel):
		return ReasonChannelNotInCampaign, true
	}
	return "", false
}

// covers reports whether a list of opted-out channels covers channel.
func covers(optedOut []string, channel string) bool {
	return slices.Contains(optedOut, channel) || slices.Contains(optedOut, contract.ChannelAll)
}

// timed checks, at t, the rules whose outcome moves with time, in order.
func timed(f Facts, zones []*time.Location, t time.Time) (Reason, bool) {
	for _, rule := range timedRules {
		if _, failed := rule.check(f, zones, t); failed {
			return rule.reason, true
		}
	}
	return "", false
}

// A timedRule reports whether it fails at t and, if so, the earliest
// instant after t before which it cannot pass. Jumping there never skips an
// instant at which every rule passes, so iterating the jumps finds the
// earliest such instant.
type timedRule struct {
	reason Reason
	check  func(f Facts, zones []*time.Location, t time.Time) (notBefore time.Time, failed bool)
}

var timedRules = []timedRule{
	{ReasonOutsideContactHours, checkHours},
	{ReasonCallFrequencyLimit, checkCallLimit},
	{ReasonConversationCooldown, checkCooldown},
	{ReasonStateFrequencyLimit, checkStatePack},
}

// nextAllowed is the earliest instant >= f.At at which every timed rule
// passes. It terminates: every jump moves forward, a limit or cooldown jump
// lands on one of finitely many instants s + Window of the history, and
// between two of those the hours rule is met within a day.
func nextAllowed(f Facts, zones []*time.Location) time.Time {
	t := f.At
	for {
		moved := false
		for _, rule := range timedRules {
			if notBefore, failed := rule.check(f, zones, t); failed {
				if !notBefore.After(t) {
					panic("contact: a rule failing at an instant named no later one to retry at")
				}
				t, moved = notBefore, true
			}
		}
		if !moved {
			return t
		}
	}
}

func checkHours(_ Facts, zones []*time.Location, t time.Time) (time.Time, bool) {
	for _, loc := range zones {
		if !inHours(t, loc) {
			return nextOpening(t, loc), true
		}
	}
	return time.Time{}, false
}

func checkCallLimit(f Facts, _ []*time.Location, t time.Time) (time.Time, bool) {
	if f.Channel != contract.ChannelCall {
		return time.Time{}, false
	}
	return checkLimit(f.History, t, CallLimit, []string{contract.ChannelCall})
}

func checkStatePack(f Facts, _ []*time.Location, t time.Time) (time.Time, bool) {
	p, ok := PackOf(f.State)
	if !ok || !slices.Contains(p.Channels, f.Channel) {
		return time.Time{}, false
	}
	return checkLimit(f.History, t, p.Limit, p.Channels)
}

// checkLimit fails when limit counted attempts on channels fall in the
// window at t. Counted attempts only leave the window as time passes (new
// ones may enter), so the limit cannot pass before enough of the oldest
// have left: n - limit + 1 of them, the last of which leaves at its
// attemptedAt + Window.
func checkLimit(history []Attempt, t time.Time, limit int, channels []string) (time.Time, bool) {
	var in []time.Time
	for _, a := range history {
		if a.counts() && slices.Contains(channels, a.Channel) && InWindow(a.AttemptedAt, t) {
			in = append(in, a.AttemptedAt)
		}
	}
	if len(in) < limit {
		return time.Time{}, false
	}
	slices.SortFunc(in, time.Time.Compare)
	return in[len(in)-limit].Add(Window), true
}

// checkCooldown fails, for a call, when a conversation outcome (of an
// outbound or an inbound contact) falls in the window at t; it cannot pass
// before the latest of them has left.
func checkCooldown(f Facts, _ []*time.Location, t time.Time) (time.Time, bool) {
	if f.Channel != contract.ChannelCall {
		return time.Time{}, false
	}
	var latest time.Time
	failed := false
	for _, a := range f.History {
		if a.Outcome == contract.OutcomeConversation && InWindow(a.OutcomeAt, t) {
			if !failed || a.OutcomeAt.After(latest) {
				latest = a.OutcomeAt
			}
			failed = true
		}
	}
	return latest.Add(Window), failed
}
