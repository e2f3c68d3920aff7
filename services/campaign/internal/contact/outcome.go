package contact

import (
	"slices"

	"github.com/rcm-platform/rcm/api/contract"
)

// Outcomes an attempt may take. A call takes OutcomeNoAnswer,
// OutcomeVoicemail, OutcomeConversation or OutcomeFailed; an SMS or an
// email takes OutcomeDelivered, OutcomeBounced or OutcomeFailed.
const (
	OutcomeNoAnswer     = "no_answer"
	OutcomeVoicemail    = "voicemail"
	OutcomeConversation = "conversation" // starts the conversation cooldown of calls
	OutcomeFailed       = "failed"
	OutcomeDelivered    = "delivered"
	OutcomeBounced      = "bounced"
)

// Outcomes returns the outcomes an attempt on channel may take, in the
// contract's order; nil for an unknown channel.
func Outcomes(channel string) []string {
	switch channel {
	case contract.ChannelCall:
		return []string{OutcomeNoAnswer, OutcomeVoicemail, OutcomeConversation, OutcomeFailed}
	case contract.ChannelSMS, contract.ChannelEmail:
		return []string{OutcomeDelivered, OutcomeBounced, OutcomeFailed}
	}
	return nil
}

// ValidOutcome reports whether an attempt on channel may take outcome.
func ValidOutcome(channel, outcome string) bool { return slices.Contains(Outcomes(channel), outcome) }
