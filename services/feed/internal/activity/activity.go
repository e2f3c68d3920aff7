// Package activity owns the activity feed's item: an event of
// rcm.campaign-events.v1 summarized for people, numbered in its account's
// sequence, and the form in which it is stored. It does no I/O.
package activity

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/events"
)

// Actor says who caused the item's event.
type Actor struct {
	Type      string `json:"type" bson:"type"`
	ID        string `json:"id" bson:"id"`
	SessionID string `json:"sessionId,omitempty" bson:"sessionId,omitempty"`
}

// Item is one entry of an account's activity feed. Seq is its place in the
// account's sequence (1, 2, 3…); clients see it as the string "cursor",
// which pagination and SSE resumption take back.
type Item struct {
	ID         string `json:"id" bson:"eventId"`
	Seq        int64  `json:"cursor,string" bson:"seq"`
	Type       string `json:"type" bson:"type"`
	DocumentID string `json:"documentId" bson:"documentId"`
	CampaignID string `json:"campaignId" bson:"campaignId"`
	Summary    string `json:"summary" bson:"summary"`
	OccurredAt string `json:"occurredAt" bson:"occurredAt"`
	Actor      Actor  `json:"actor" bson:"actor"`
}

// Cursor is the item's position as clients see it.
func (it Item) Cursor() string { return FormatCursor(it.Seq) }

// FormatCursor renders seq as a cursor.
func FormatCursor(seq int64) string { return strconv.FormatInt(seq, 10) }

// ParseCursor reads a cursor a client sent back: a decimal seq of at least
// zero, without sign or leading zeros, as FormatCursor writes it.
func ParseCursor(s string) (int64, error) {
	if s == "" || len(s) > 18 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("cursor %q is not a cursor", s)
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("cursor %q is not a cursor", s)
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// Record is an item as the store keeps it: the sequence's key, account and
// the item's own fields (seq and eventId among them, as the sequence
// requires), and when it was stored.
type Record struct {
	Key       string `bson:"_id"`
	AccountID string `bson:"accountId"`
	Item      `bson:",inline"`
	StoredAt  time.Time `bson:"storedAt"`
}

// FromEvent returns the item of e, not yet numbered (Seq 0).
func FromEvent(e events.Event) (Item, error) {
	summary, err := Summary(e)
	if err != nil {
		return Item{}, err
	}
	return Item{
		ID:         e.EventID,
		Type:       e.EventType,
		DocumentID: e.DocumentID,
		CampaignID: e.CampaignID,
		Summary:    summary,
		OccurredAt: e.OccurredAt,
		Actor:      Actor{Type: e.Actor.Type, ID: e.Actor.ID, SessionID: e.Actor.SessionID},
	}, nil
}

// Summary says what e did in one sentence for people. It never repeats an
// opt-out's notes: they are free text that may hold personal data.
func Summary(e events.Event) (string, error) {
	switch e.EventType {
	case events.TypeCampaignStarted:
		s := "Campaign started on " + e.DocumentID
		if c := e.Campaign; c != nil {
			var chs []string
			for _, ch := range []struct {
				on   bool
				name string
			}{{c.SMS, contract.ChannelSMS}, {c.Email, contract.ChannelEmail}, {c.Call, contract.ChannelCall}} {
				if ch.on {
					chs = append(chs, channelName(ch.name))
				}
			}
			if len(chs) > 0 {
				s += " via " + joinAnd(chs)
			}
		}
		return s, nil
	case events.TypeOptOut:
		s := "Borrower opted out of " + channelName(e.Channel)
		switch {
		case e.Deactivated != nil && *e.Deactivated && e.Channel == contract.ChannelAll:
			s += "; campaign deactivated"
		case e.Deactivated != nil && *e.Deactivated:
			s += "; campaign deactivated (no channel left)"
		case e.Active != nil && !*e.Active:
			s += "; campaign already inactive"
		}
		return s, nil
	case events.TypeCampaignEnded:
		switch e.Reason {
		case events.ReasonLoanCurrent:
			return "Campaign ended: the loan is CURRENT", nil
		case events.ReasonLoanRemoved:
			return "Campaign ended: the loan was removed", nil
		default:
			if e.LoanStatus != nil && *e.LoanStatus != "" {
				return "Campaign ended: the loan status changed to " + *e.LoanStatus, nil
			}
			return "Campaign ended: the loan status changed", nil
		}
	case events.TypeConsentChanged:
		s := consentSubject(e.Channel) + " " + e.Status
		if e.Basis != "" {
			s += ": " + e.Basis
		}
		return s, nil
	case events.TypeContactAttempted:
		if e.Direction == events.DirectionInbound {
			return "Inbound " + channelName(e.Channel) + " recorded", nil
		}
		if e.Channel == contract.ChannelCall {
			return "Call placed", nil
		}
		return title(channelName(e.Channel)) + " sent", nil
	case events.TypeContactBlocked:
		s := title(channelName(e.Channel)) + " blocked: " + blockedReason(e)
		if e.NextAllowedAt != nil {
			if at, err := events.ParseTime(*e.NextAllowedAt); err == nil {
				s += "; next allowed " + at.Format("Mon 2 Jan 15:04 MST")
			}
		}
		return s, nil
	case events.TypeContactOutcome:
		return title(channelName(e.Channel)) + " outcome: " + strings.ReplaceAll(e.Outcome, "_", " "), nil
	default:
		return "", fmt.Errorf("%w: no activity for event type %q", events.ErrUnknownType, e.EventType)
	}
}

// consentSubject names whose consent a consent change is about.
func consentSubject(channel string) string {
	if channel == contract.ChannelAll {
		return "Consent for all channels"
	}
	return title(channelName(channel)) + " consent"
}

// blockedReason says in words why a contact was blocked. It names the
// rules' figures (7 calls, 7 days) rather than counting: the event does
// not carry the count.
func blockedReason(e events.Event) string {
	switch e.Reason {
	case events.ReasonCampaignInactive:
		return "the campaign is not active"
	case events.ReasonLoanNotBehind:
		return "the loan is not BEHIND"
	case events.ReasonOptedOut:
		return "the borrower opted out of " + channelName(e.Channel)
	case events.ReasonChannelNotInCampaign:
		return "the campaign was not started with " + channelName(e.Channel)
	case events.ReasonOutsideContactHours:
		return "outside the borrower's contact hours (8 a.m. to 9 p.m.)"
	case events.ReasonCallFrequencyLimit:
		return "7 calls in the last 7 days"
	case events.ReasonConversationCooldown:
		return "a conversation in the last 7 days"
	case events.ReasonStateFrequencyLimit:
		return "the borrower's state limit of contacts in 7 days"
	default:
		return strings.ReplaceAll(e.Reason, "_", " ")
	}
}

// title capitalizes a channel's name for the start of a sentence.
func title(s string) string {
	if s == "" || s == "SMS" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func channelName(ch string) string {
	switch ch {
	case contract.ChannelSMS:
		return "SMS"
	case contract.ChannelAll:
		return "all channels"
	default:
		return ch
	}
}

// joinAnd joins "a", "a and b", "a, b and c".
func joinAnd(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
