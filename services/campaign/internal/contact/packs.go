package contact

import (
	"strings"

	"github.com/rcm-platform/rcm/api/contract"
)

// Pack is a state's stricter rule: at most Limit allowed outbound attempts
// over Channels together in the window. Only a contact on one of Channels
// is limited by it; its denials are ReasonStateFrequencyLimit.
type Pack struct {
	Channels []string
	Limit    int
	Source   string // the regulation it follows
}

// Packs are the rule packs by borrower state (its USPS code). Adding a
// state is adding an entry.
var Packs = map[string]Pack{
	"MA": {
		Channels: []string{contract.ChannelCall, contract.ChannelSMS},
		Limit:    2,
		Source:   "940 CMR 7.04(1)(f)",
	},
}

// PackOf returns the rule pack of a borrower's state, if it has one. The
// code is matched trimmed and in any case: a borrower recorded as "ma" is
// still in Massachusetts, and the conservative reading applies the pack.
func PackOf(state string) (Pack, bool) {
	p, ok := Packs[strings.ToUpper(strings.TrimSpace(state))]
	return p, ok
}
