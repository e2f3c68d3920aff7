package api

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
)

// Limits of a consent change's basis, in code points after trimming.
const (
	minBasis = 1
	maxBasis = 200
)

// Clearance times: a clearance may be asked from one minute ago to 366
// days ahead of the gateway's clock.
const (
	clearancePast   = time.Minute
	clearanceFuture = 366 * 24 * time.Hour
)

// ConsentCommand is a validated, normalized consent change: what the
// gateway forwards to the campaign service.
type ConsentCommand struct {
	Channel string `json:"channel"`
	Status  string `json:"status"`
	Basis   string `json:"basis"`
	Notes   string `json:"notes,omitempty"`
}

// AttemptCommand is a validated, normalized contact attempt. CampaignID is
// empty only for an inbound contact without a campaign.
type AttemptCommand struct {
	CampaignID string `json:"campaignId,omitempty"`
	Channel    string `json:"channel"`
	Direction  string `json:"direction"`
	Notes      string `json:"notes,omitempty"`
}

// OutcomeCommand is a validated, normalized outcome of an attempt. Whether
// the outcome suits the attempt's channel is known only with the attempt:
// the campaign service checks it.
type OutcomeCommand struct {
	Outcome string `json:"outcome"`
	Notes   string `json:"notes,omitempty"`
}

// outcomes is every outcome of any channel, in the contract's order.
var outcomes = func() []string {
	var out []string
	for _, ch := range contract.Channels() {
		for _, o := range contract.Outcomes(ch) {
			if !slices.Contains(out, o) {
				out = append(out, o)
			}
		}
	}
	return out
}()

// enumField reads a required string field that must be one of values.
// A value longer than the longest is refused for its length first.
func enumField(m map[string]json.RawMessage, name string, required bool, values []string) (string, error) {
	longest := 0
	for _, v := range values {
		longest = max(longest, len([]rune(v)))
	}
	s, err := stringField(m, name, required, 0, longest)
	if err != nil {
		return "", err
	}
	if !required && isAbsent(m, name) {
		return "", nil
	}
	if !slices.Contains(values, s) {
		return "", invalid(name, "must be one of "+quoteAll(values))
	}
	return s, nil
}

// isAbsent reports whether an optional member is missing or null.
func isAbsent(m map[string]json.RawMessage, name string) bool {
	raw, ok := m[name]
	return !ok || strings.TrimSpace(string(raw)) == "null"
}

// ParseConsent validates a consent change given as its JSON members, in
// the order of the contract's table.
func ParseConsent(m map[string]json.RawMessage) (ConsentCommand, error) {
	var c ConsentCommand
	var err error
	if c.Channel, err = enumField(m, "channel", true, contract.OptOutChannels()); err != nil {
		return c, err
	}
	if c.Status, err = enumField(m, "status", true, []string{events.ConsentGranted, events.ConsentRevoked}); err != nil {
		return c, err
	}
	if c.Basis, err = stringField(m, "basis", true, minBasis, maxBasis); err != nil {
		return c, err
	}
	if c.Notes, err = stringField(m, "notes", false, 0, contract.MaxNotes); err != nil {
		return c, err
	}
	return c, nil
}

// ParseAttempt validates a contact attempt given as its JSON members. The
// direction defaults to outbound; an outbound attempt needs its campaign.
func ParseAttempt(m map[string]json.RawMessage) (AttemptCommand, error) {
	var c AttemptCommand
	var err error
	if c.CampaignID, err = stringField(m, "campaignId", false, contract.MinCampaignID, contract.MaxCampaignID); err != nil {
		return c, err
	}
	if c.Channel, err = enumField(m, "channel", true, contract.Channels()); err != nil {
		return c, err
	}
	if c.Direction, err = enumField(m, "direction", false, []string{events.DirectionOutbound, events.DirectionInbound}); err != nil {
		return c, err
	}
	if c.Direction == "" {
		c.Direction = events.DirectionOutbound
	}
	if c.Notes, err = stringField(m, "notes", false, 0, contract.MaxNotes); err != nil {
		return c, err
	}
	if c.Direction == events.DirectionOutbound && c.CampaignID == "" {
		return c, invalid("campaignId", "required for an outbound attempt")
	}
	return c, nil
}

// ParseOutcome validates an attempt's outcome given as its JSON members.
func ParseOutcome(m map[string]json.RawMessage) (OutcomeCommand, error) {
	var c OutcomeCommand
	var err error
	if c.Outcome, err = enumField(m, "outcome", true, outcomes); err != nil {
		return c, err
	}
	if c.Notes, err = stringField(m, "notes", false, 0, contract.MaxNotes); err != nil {
		return c, err
	}
	return c, nil
}

// ClearanceQuery is a validated clearance question. At is zero for now.
type ClearanceQuery struct {
	Channel string
	// CampaignID is what the caller sent when HasCampaign; its syntax is
	// not checked here: a malformed id is a campaign not found.
	CampaignID  string
	HasCampaign bool
	At          time.Time
}

// badQuery returns the contract's "Invalid query parameter." naming the
// parameter and its rule.
func badQuery(name, rule string) error {
	return httpx.ErrInvalidQuery.With("parameter", name).With("rule", rule)
}

// ParseClearance validates a clearance's query at the instant now: channel
// is sms, email or call; at, when given, is an RFC 3339 time in UTC
// written with Z, from one minute before now to 366 days after. A
// parameter given twice is malformed.
func ParseClearance(q url.Values, now time.Time) (ClearanceQuery, error) {
	var c ClearanceQuery
	for _, name := range []string{"channel", "campaignId", "at"} {
		if len(q[name]) > 1 {
			return c, badQuery(name, "given once")
		}
	}
	c.Channel = q.Get("channel")
	if !slices.Contains(contract.Channels(), c.Channel) {
		return c, badQuery("channel", "must be one of "+quoteAll(contract.Channels()))
	}
	_, c.HasCampaign = q["campaignId"]
	c.CampaignID = q.Get("campaignId")
	if v, ok := q["at"]; ok {
		at, err := time.Parse(time.RFC3339Nano, v[0])
		if err != nil || !strings.HasSuffix(v[0], "Z") {
			return c, badQuery("at", "must be an RFC 3339 time in UTC ending in Z (a + must be percent-encoded)")
		}
		if at.Before(now.Add(-clearancePast)) || at.After(now.Add(clearanceFuture)) {
			return c, badQuery("at", "must be from one minute ago to 366 days ahead")
		}
		c.At = at.UTC()
	}
	return c, nil
}

// Encode returns the query the campaign service is sent: only the
// parameters it knows, at in UTC.
func (c ClearanceQuery) Encode() string {
	q := url.Values{"channel": {c.Channel}}
	if c.HasCampaign {
		q.Set("campaignId", c.CampaignID)
	}
	if !c.At.IsZero() {
		q.Set("at", c.At.Format(time.RFC3339Nano))
	}
	return q.Encode()
}
