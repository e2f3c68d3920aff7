package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/httpx"
)

// StartCommand is a validated, normalized start-campaign body: what the
// gateway forwards to the campaign service.
type StartCommand struct {
	SMS     bool   `json:"sms"`
	Email   bool   `json:"email"`
	Call    bool   `json:"call"`
	Tone    string `json:"tone"`
	Cadence string `json:"cadence"`
	Notes   string `json:"notes,omitempty"`
}

// OptOutCommand is a validated, normalized opt-out body.
type OptOutCommand struct {
	CampaignID string `json:"campaignId"`
	Channel    string `json:"channel"`
	Notes      string `json:"notes,omitempty"`
}

// channelRule is the rule an opt-out's channel breaks:
// must be one of "sms", "email", "call", "all".
var channelRule = "must be one of " + quoteAll(contract.OptOutChannels())

// maxChannel is the length of the longest channel name: a longer value is
// refused for its length before its name is looked at.
var maxChannel = func() int {
	n := 0
	for _, ch := range contract.OptOutChannels() {
		n = max(n, utf8.RuneCountInString(ch))
	}
	return n
}()

func quoteAll(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// invalid returns the contract's "Invalid body." naming the field and rule.
func invalid(field, rule string) error {
	return httpx.ErrInvalidBody.With("field", field).With("rule", rule)
}

// ParseStart validates a start-campaign body given as its JSON members,
// in the contract's order: every body rule, then the channel rule.
func ParseStart(m map[string]json.RawMessage) (StartCommand, error) {
	var c StartCommand
	var err error
	if c.SMS, err = boolField(m, "sms"); err != nil {
		return c, err
	}
	if c.Email, err = boolField(m, "email"); err != nil {
		return c, err
	}
	if c.Call, err = boolField(m, "call"); err != nil {
		return c, err
	}
	if c.Tone, err = stringField(m, "tone", true, contract.MinTone, contract.MaxTone); err != nil {
		return c, err
	}
	if c.Cadence, err = stringField(m, "cadence", true, contract.MinCadence, contract.MaxCadence); err != nil {
		return c, err
	}
	if c.Notes, err = stringField(m, "notes", false, 0, contract.MaxNotes); err != nil {
		return c, err
	}
	if !c.SMS && !c.Email && !c.Call {
		return c, httpx.ErrNoChannel
	}
	return c, nil
}

// ParseOptOut validates an opt-out body given as its JSON members.
func ParseOptOut(m map[string]json.RawMessage) (OptOutCommand, error) {
	var c OptOutCommand
	var err error
	if c.CampaignID, err = stringField(m, "campaignId", true, contract.MinCampaignID, contract.MaxCampaignID); err != nil {
		return c, err
	}
	if c.Channel, err = stringField(m, "channel", true, 1, maxChannel); err != nil {
		return c, err
	}
	if !slices.Contains(contract.OptOutChannels(), c.Channel) {
		return c, invalid("channel", channelRule)
	}
	if c.Notes, err = stringField(m, "notes", false, 0, contract.MaxNotes); err != nil {
		return c, err
	}
	return c, nil
}

// boolField reads a required JSON boolean: true or false, not "true", not
// 1, not null.
func boolField(m map[string]json.RawMessage, name string) (bool, error) {
	raw, ok := m[name]
	if !ok {
		return false, invalid(name, "required")
	}
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "null":
		return false, invalid(name, "required")
	default:
		return false, invalid(name, "must be a JSON boolean")
	}
}

// stringField reads a JSON string, trims leading and trailing whitespace,
// and checks its length in code points. An optional field may be absent or
// null; a required one may be neither.
func stringField(m map[string]json.RawMessage, name string, required bool, min, max int) (string, error) {
	raw, ok := m[name]
	raw = bytes.TrimSpace(raw)
	if !ok || string(raw) == "null" {
		if required {
			return "", invalid(name, "required")
		}
		return "", nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", invalid(name, "must be a JSON string")
	}
	if !validUnicode(raw) {
		return "", invalid(name, "must be valid UTF-8")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid(name, "must be a JSON string")
	}
	s = strings.TrimSpace(s)
	n := utf8.RuneCountInString(s)
	if n < min || n > max {
		if min > 0 && n == 0 {
			return "", invalid(name, "must not be empty or only whitespace")
		}
		return "", invalid(name, fmt.Sprintf("must be %d to %d characters", min, max))
	}
	return s, nil
}

// validUnicode reports whether the JSON string literal raw is valid UTF-8
// and its \u escapes pair their surrogates. encoding/json would silently
// replace either fault with U+FFFD, storing something the client never
// sent.
func validUnicode(raw []byte) bool {
	if !utf8.Valid(raw) {
		return false
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r, ok := hex4(raw, i+1)
		if !ok {
			return false
		}
		i += 4
		switch {
		case utf16.IsSurrogate(rune(r)) && r < 0xDC00:
			// A high surrogate must be followed by an escaped low one.
			if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
				return false
			}
			lo, ok := hex4(raw, i+3)
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return false
			}
			i += 6
		case utf16.IsSurrogate(rune(r)):
			return false // a lone low surrogate
		}
	}
	return true
}

func hex4(raw []byte, at int) (uint64, bool) {
	if at+4 > len(raw) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(raw[at:at+4]), 16, 32)
	return v, err == nil
}
