// Package events owns the platform's events: their types, the JSON data
// published on rcm.campaign-events.v1, the CloudEvents attributes of a
// message, and validation against the JSON Schemas in the api module. It
// imports no Kafka code: package kafkarec turns a message into a record and
// a record back into an event.
package events

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Topics.
const (
	Topic    = "rcm.campaign-events.v1"
	DLQTopic = "rcm.campaign-events.v1.dlq"
	// ConsentTopic is compacted: per document, its consent state
	// (ConsentRecord, keyed by ConsentKey).
	ConsentTopic = "rcm.consent.v1"
	Source       = "rcm/campaign"
	timeParse    = "2006-01-02T15:04:05.000Z07:00"
)

// Event types, as carried in the data's eventType.
const (
	TypeCampaignStarted  = "campaign_started"
	TypeOptOut           = "opt_out"
	TypeCampaignEnded    = "campaign_ended"
	TypeConsentChanged   = "consent_changed"
	TypeContactAttempted = "contact_attempted"
	TypeContactBlocked   = "contact_blocked"
	TypeContactOutcome   = "contact_outcome"
)

// Types returns every event type, in the order they were added. A consumer
// ignores a type that is not here: new types are an additive change.
func Types() []string {
	return []string{TypeCampaignStarted, TypeOptOut, TypeCampaignEnded,
		TypeConsentChanged, TypeContactAttempted, TypeContactBlocked, TypeContactOutcome}
}

// Known reports whether t is an event type of Types.
func Known(t string) bool { return slices.Contains(Types(), t) }

// Reasons a campaign ends.
const (
	ReasonLoanCurrent       = "loan_current"
	ReasonLoanRemoved       = "loan_removed"
	ReasonLoanStatusChanged = "loan_status_changed"
)

// CEType returns the CloudEvents type of an event type:
// campaign_started -> rcm.campaign_started.v1.
func CEType(eventType string) string { return "rcm." + eventType + ".v1" }

// Actor says who caused an event: a user (Clerk sub and sid) or the system.
type Actor struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	SessionID string `json:"sessionId,omitempty"`
}

// Actor types.
const (
	ActorUser   = "user"
	ActorSystem = "system"
)

// OptOutRecord is one opt-out as listed in a campaign record.
type OptOutRecord struct {
	Channel    string `json:"channel"`
	Notes      string `json:"notes,omitempty"`
	RecordedAt string `json:"recordedAt"`
}

// SuppressedChannel is a channel of a campaign revoked on its document:
// when and by which event (the current revocation).
type SuppressedChannel struct {
	Channel   string `json:"channel"`
	RevokedAt string `json:"revokedAt"`
	EventID   string `json:"eventId"`
}

// CampaignRecord is a campaign as the API returns it and campaign_started
// carries it.
type CampaignRecord struct {
	ID             string   `json:"id"`
	DocumentID     string   `json:"documentId"`
	SMS            bool     `json:"sms"`
	Email          bool     `json:"email"`
	Call           bool     `json:"call"`
	Tone           string   `json:"tone"`
	Cadence        string   `json:"cadence"`
	Notes          string   `json:"notes,omitempty"`
	Active         bool     `json:"active"`
	ActiveChannels []string `json:"activeChannels"`
	// Suppressed lists the channels the campaign was started with that
	// are revoked on its document; absent only from records older than
	// consent (a campaign_started published before it).
	Suppressed []SuppressedChannel `json:"suppressedChannels,omitzero"`
	OptOuts    []OptOutRecord      `json:"optOuts"`
	CreatedBy  string              `json:"createdBy"`
	CreatedAt  string              `json:"createdAt"`
	UpdatedAt  string              `json:"updatedAt"`
	EndedAt    string              `json:"endedAt,omitempty"`
	EndReason  string              `json:"endReason,omitempty"`
}

// Event is the JSON data of every event type. Fields after OccurredAt belong
// to some types each and are absent from the others. CampaignID is absent
// from consent_changed and from an inbound contact without a campaign.
type Event struct {
	EventID    string `json:"eventId"`
	EventType  string `json:"eventType"`
	AccountID  string `json:"accountId"`
	DocumentID string `json:"documentId"`
	CampaignID string `json:"campaignId,omitempty"`
	Actor      Actor  `json:"actor"`
	OccurredAt string `json:"occurredAt"`

	// campaign_started
	Campaign *CampaignRecord `json:"campaign,omitempty"`

	// opt_out; Channel and Notes also consent_changed and contact_*
	Channel        string   `json:"channel,omitempty"`
	Notes          string   `json:"notes,omitempty"`
	Deactivated    *bool    `json:"deactivated,omitempty"`
	Active         *bool    `json:"active,omitempty"`
	ActiveChannels []string `json:"activeChannels,omitempty"`

	// campaign_ended; Reason also contact_blocked
	Reason     string  `json:"reason,omitempty"`
	LoanStatus *string `json:"loanStatus,omitempty"`

	// consent_changed; Consent also opt_out (the state after it; absent
	// from opt_out events older than it)
	Status  string   `json:"status,omitempty"`
	Basis   string   `json:"basis,omitempty"`
	Consent *Consent `json:"consent,omitempty"`

	// contact_attempted, contact_blocked, contact_outcome
	AttemptID   string `json:"attemptId,omitempty"`
	Direction   string `json:"direction,omitempty"`
	AttemptedAt string `json:"attemptedAt,omitempty"`
	// NextAllowedAt is nil when no time fixes what blocked the attempt;
	// contact_blocked always carries it, as null then.
	NextAllowedAt *string `json:"nextAllowedAt,omitempty"`
	Outcome       string  `json:"outcome,omitempty"`
	OutcomeAt     string  `json:"outcomeAt,omitempty"`
}

// Time returns OccurredAt parsed.
func (e Event) Time() (time.Time, error) { return ParseTime(e.OccurredAt) }

// MarshalJSON keeps the fields a type's schema requires present even when
// empty: activeChannels (possibly []) on opt_out, nextAllowedAt (possibly
// null) on contact_blocked. Other types omit them.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	switch e.EventType {
	case TypeOptOut:
		channels := e.ActiveChannels
		if channels == nil {
			channels = []string{}
		}
		return json.Marshal(struct {
			plain
			ActiveChannels []string `json:"activeChannels"`
		}{plain(e), channels})
	case TypeContactBlocked:
		return json.Marshal(struct {
			plain
			NextAllowedAt *string `json:"nextAllowedAt"`
		}{plain(e), e.NextAllowedAt})
	default:
		return json.Marshal(plain(e))
	}
}

// FormatTime renders t as the platform writes every time: RFC 3339, UTC,
// milliseconds.
func FormatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// ParseTime parses a time written by FormatTime.
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeParse, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse time %q: %w", s, err)
	}
	return t.UTC(), nil
}
