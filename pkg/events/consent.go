package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
)

// Consent statuses of a channel. Granted is the default: no revocation on
// record.
const (
	ConsentGranted = "granted"
	ConsentRevoked = "revoked"
)

// Sources of a consent change: the route that made it.
const (
	SourceOptOut  = "opt_out" // POST …/rcm/opt-out
	SourceConsent = "consent" // POST …/consent
)

// Consent is a document's consent state: per channel, and the version that
// rises by 1 with each recorded opt-out or consent change of the document.
// GET …/consent returns it, consent_changed and opt_out carry it, and it is
// the heart of a ConsentRecord.
type Consent struct {
	Channels ConsentChannels `json:"channels"`
	Version  int64           `json:"version"`
}

// ConsentChannels holds each channel's state, in the contract's order.
type ConsentChannels struct {
	SMS   ChannelConsent `json:"sms"`
	Email ChannelConsent `json:"email"`
	Call  ChannelConsent `json:"call"`
}

// ChannelConsent is one channel's state. ChangedAt, EventID and Source say
// when, by which event and through which route the status last changed;
// they are "" (null in JSON) while it never did.
type ChannelConsent struct {
	Status    string
	ChangedAt string
	EventID   string
	Source    string
}

// NewConsent returns the state of a document with nothing recorded: every
// channel granted, version 0.
func NewConsent() Consent {
	g := ChannelConsent{Status: ConsentGranted}
	return Consent{Channels: ConsentChannels{SMS: g, Email: g, Call: g}}
}

// Channel returns the state of the named channel (sms, email or call), or
// nil for another name.
func (c *ConsentChannels) Channel(name string) *ChannelConsent {
	switch name {
	case contract.ChannelSMS:
		return &c.SMS
	case contract.ChannelEmail:
		return &c.Email
	case contract.ChannelCall:
		return &c.Call
	default:
		return nil
	}
}

// Revoked reports whether the named channel is revoked.
func (c Consent) Revoked(channel string) bool {
	ch := c.Channels.Channel(channel)
	return ch != nil && ch.Status == ConsentRevoked
}

// Set records a change of channel (sms, email, call, or all for the three)
// to status by the event eventID through source at at, and raises the
// version by one. A channel already in status keeps its ChangedAt, EventID
// and Source: they change only with the status.
func (c *Consent) Set(channel, status, source, eventID string, at time.Time) error {
	if status != ConsentGranted && status != ConsentRevoked {
		return fmt.Errorf("consent status %q is not granted or revoked", status)
	}
	names := []string{channel}
	if channel == contract.ChannelAll {
		names = contract.Channels()
	}
	for _, name := range names {
		if c.Channels.Channel(name) == nil {
			return fmt.Errorf("consent channel %q is not sms, email, call or all", channel)
		}
	}
	for _, name := range names {
		ch := c.Channels.Channel(name)
		if ch.Status != status {
			*ch = ChannelConsent{Status: status, ChangedAt: FormatTime(at), EventID: eventID, Source: source}
		}
	}
	c.Version++
	return nil
}

// MarshalJSON writes the unset fields as null, as the schema has them.
func (c ChannelConsent) MarshalJSON() ([]byte, error) {
	null := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	return json.Marshal(struct {
		Status    string  `json:"status"`
		ChangedAt *string `json:"changedAt"`
		EventID   *string `json:"eventId"`
		Source    *string `json:"source"`
	}{c.Status, null(c.ChangedAt), null(c.EventID), null(c.Source)})
}

// UnmarshalJSON reads what MarshalJSON writes; null is "".
func (c *ChannelConsent) UnmarshalJSON(raw []byte) error {
	var v struct {
		Status    string  `json:"status"`
		ChangedAt *string `json:"changedAt"`
		EventID   *string `json:"eventId"`
		Source    *string `json:"source"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	*c = ChannelConsent{Status: v.Status, ChangedAt: str(v.ChangedAt), EventID: str(v.EventID), Source: str(v.Source)}
	return nil
}

// ConsentRecord is the value of a ConsentTopic record: a document's consent
// state as read when the record is published.
type ConsentRecord struct {
	AccountID  string `json:"accountId"`
	DocumentID string `json:"documentId"`
	Consent
}

// Key returns the record's key on ConsentTopic.
func (r ConsentRecord) Key() string { return ConsentKey(r.AccountID, r.DocumentID) }

// ConsentKey returns the key of a document's records on ConsentTopic:
// "<accountId>/<documentId>". Account ids hold no "/", so the first one
// splits the key.
func ConsentKey(accountID, documentID string) string { return accountID + "/" + documentID }

// Supersedes reports whether r should replace old when a reader
// materialises ConsentTopic: a higher version wins, so a record republished
// late never brings back a revoked channel.
func (r ConsentRecord) Supersedes(old ConsentRecord) bool { return r.Version > old.Version }

// DecodeConsentRecord validates raw against the topic's schema and returns
// the record. A violation wraps ErrMalformed.
func DecodeConsentRecord(raw []byte) (ConsentRecord, error) {
	if err := Validate(SchemaConsent, raw); err != nil {
		return ConsentRecord{}, err
	}
	var r ConsentRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return ConsentRecord{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return r, nil
}
