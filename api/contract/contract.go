// Package contract holds the public contract's values as Go constants: the
// error messages clients match byte for byte, the limits of what they send,
// and the channel names. The gateway validates with them, the campaign
// rules enforce them, pkg/httpx builds its errors from them, and a test
// checks every one against openapi.yaml and the event schemas, both ways,
// so that a message or a limit changes in one place. It imports nothing.
package contract

// Error messages, each the "error" of a response openapi.yaml describes.
const (
	MsgMissingToken       = "Missing Authorization Bearer token."
	MsgInvalidToken       = "Invalid or expired token."
	MsgInvalidBody        = "Invalid body."
	MsgNoChannel          = "At least one channel must be true."
	MsgLoanRule           = "RCM only when a loan exists and status is BEHIND."
	MsgNotFound           = "Not found."
	MsgCampaignNotFound   = "Campaign not found or access denied."
	MsgBodyTooLarge       = "Request body too large."
	MsgUnavailable        = "Service temporarily unavailable. Retry later."
	MsgInvalidQuery       = "Invalid query parameter."
	MsgInvalidLastEventID = "Invalid Last-Event-ID."
	MsgIdempotencyKey     = "Invalid Idempotency-Key header."
	MsgTooManyRequests    = "Too many requests. Retry later."
	MsgKeyReused          = "Idempotency-Key already used with a different request."
	MsgKeyInProgress      = "A request with this Idempotency-Key is still in progress. Retry later."
	MsgAllOptedOut        = "Every requested channel is opted out for this document."
	MsgNotPermitted       = "Contact not permitted."
	MsgOutcomeRecorded    = "Outcome already recorded."
	MsgAttemptNotFound    = "Attempt not found or access denied."
)

// Limits of a command's strings, in Unicode code points of the value
// trimmed of leading and trailing whitespace.
const (
	MinTone       = 1
	MaxTone       = 80
	MinCadence    = 1
	MaxCadence    = 80
	MaxNotes      = 2000
	MinCampaignID = 1
	MaxCampaignID = 128
)

// Limits of a request.
const (
	// MaxBody is the largest command body in bytes; a larger one is
	// MsgBodyTooLarge.
	MaxBody = 64 << 10
	// MinIdempotencyKey and MaxIdempotencyKey bound an Idempotency-Key
	// header, in visible ASCII characters.
	MinIdempotencyKey = 1
	MaxIdempotencyKey = 255
	// MinPageSize, MaxPageSize and DefaultPageSize are a list route's
	// limit query parameter: its bounds and its value when absent.
	MinPageSize     = 1
	MaxPageSize     = 200
	DefaultPageSize = 50
)

// Channels of outreach. ChannelAll is valid only in an opt-out, where it
// ends the campaign.
const (
	ChannelSMS   = "sms"
	ChannelEmail = "email"
	ChannelCall  = "call"
	ChannelAll   = "all"
)

// Channels returns the outreach channels in the contract's order.
func Channels() []string { return []string{ChannelSMS, ChannelEmail, ChannelCall} }

// OptOutChannels returns what an opt-out's channel may be, in the
// contract's order.
func OptOutChannels() []string { return append(Channels(), ChannelAll) }

// Outcomes of a contact attempt. A call takes no_answer, voicemail,
// conversation or failed; sms and email take delivered, bounced or failed.
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
	case ChannelCall:
		return []string{OutcomeNoAnswer, OutcomeVoicemail, OutcomeConversation, OutcomeFailed}
	case ChannelSMS, ChannelEmail:
		return []string{OutcomeDelivered, OutcomeBounced, OutcomeFailed}
	}
	return nil
}
