package events

import "time"

// Directions of a contact attempt.
const (
	DirectionOutbound = "outbound"
	DirectionInbound  = "inbound" // the borrower contacted us
)

// Decisions on an outbound contact attempt, as its record says.
const (
	DecisionAllowed = "allowed"
	DecisionBlocked = "blocked"
)

// Reasons a contact attempt is blocked, in the order the rules check them;
// the first that fails is the reason.
const (
	ReasonCampaignInactive     = "campaign_inactive"
	ReasonLoanNotBehind        = "loan_not_behind"
	ReasonOptedOut             = "opted_out"
	ReasonChannelNotInCampaign = "channel_not_in_campaign"
	ReasonOutsideContactHours  = "outside_contact_hours"
	ReasonCallFrequencyLimit   = "call_frequency_limit"
	ReasonConversationCooldown = "conversation_cooldown"
	ReasonStateFrequencyLimit  = "state_frequency_limit"
)

// ContactReasons returns the reasons a contact is blocked, in the rules'
// order.
func ContactReasons() []string {
	return []string{ReasonCampaignInactive, ReasonLoanNotBehind, ReasonOptedOut, ReasonChannelNotInCampaign,
		ReasonOutsideContactHours, ReasonCallFrequencyLimit, ReasonConversationCooldown, ReasonStateFrequencyLimit}
}

// Head is what every event carries besides its type and its own fields.
type Head struct {
	EventID    string
	AccountID  string
	DocumentID string
	CampaignID string // "" for an event of no campaign
	Actor      Actor
	At         time.Time // occurredAt
}

func (h Head) event(typ string) Event {
	return Event{
		EventID:    h.EventID,
		EventType:  typ,
		AccountID:  h.AccountID,
		DocumentID: h.DocumentID,
		CampaignID: h.CampaignID,
		Actor:      h.Actor,
		OccurredAt: FormatTime(h.At),
	}
}

// ConsentChangedData is what a consent_changed event adds.
type ConsentChangedData struct {
	Channel string // sms, email, call or all
	Status  string // ConsentGranted or ConsentRevoked
	Basis   string
	Notes   string // "" when absent
	Consent Consent
}

// NewConsentChanged returns the consent_changed event of d. It belongs to
// no campaign: h.CampaignID is left out.
func NewConsentChanged(h Head, d ConsentChangedData) Event {
	h.CampaignID = ""
	e := h.event(TypeConsentChanged)
	e.Channel, e.Status, e.Basis, e.Notes = d.Channel, d.Status, d.Basis, d.Notes
	consent := d.Consent
	e.Consent = &consent
	return e
}

// ContactAttemptedData is what a contact_attempted event adds.
type ContactAttemptedData struct {
	AttemptID   string
	Channel     string
	Direction   string // DirectionOutbound or DirectionInbound
	AttemptedAt time.Time
	Notes       string // "" when absent
}

// NewContactAttempted returns the contact_attempted event of d: an allowed
// outbound attempt of h.CampaignID, or an inbound contact (h.CampaignID ""
// when it came without a campaign).
func NewContactAttempted(h Head, d ContactAttemptedData) Event {
	e := h.event(TypeContactAttempted)
	e.AttemptID, e.Channel, e.Direction, e.Notes = d.AttemptID, d.Channel, d.Direction, d.Notes
	e.AttemptedAt = FormatTime(d.AttemptedAt)
	return e
}

// ContactBlockedData is what a contact_blocked event adds.
type ContactBlockedData struct {
	AttemptID string
	Channel   string
	Reason    string // one of ContactReasons
	// NextAllowedAt is zero when no time fixes what blocked the attempt.
	NextAllowedAt time.Time
}

// NewContactBlocked returns the contact_blocked event of d, an outbound
// attempt of h.CampaignID the rules refused.
func NewContactBlocked(h Head, d ContactBlockedData) Event {
	e := h.event(TypeContactBlocked)
	e.AttemptID, e.Channel, e.Reason = d.AttemptID, d.Channel, d.Reason
	if !d.NextAllowedAt.IsZero() {
		next := FormatTime(d.NextAllowedAt)
		e.NextAllowedAt = &next
	}
	return e
}

// ContactOutcomeData is what a contact_outcome event adds.
type ContactOutcomeData struct {
	AttemptID string
	Channel   string
	Outcome   string // one of Outcomes(Channel)
	OutcomeAt time.Time
	Notes     string // "" when absent
}

// NewContactOutcome returns the contact_outcome event of d (h.CampaignID ""
// for an inbound contact without a campaign).
func NewContactOutcome(h Head, d ContactOutcomeData) Event {
	e := h.event(TypeContactOutcome)
	e.AttemptID, e.Channel, e.Outcome, e.Notes = d.AttemptID, d.Channel, d.Outcome, d.Notes
	e.OutcomeAt = FormatTime(d.OutcomeAt)
	return e
}
