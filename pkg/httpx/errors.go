// Package httpx holds what every service's HTTP layer shares: the one error
// type that carries a status and the contract's exact message, JSON
// responses, middleware (request id, recovery, access log, metrics, body
// limit) and a graceful server.
package httpx

import (
	"fmt"
	"net/http"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
)

// Messages of the errors the contract does not list; the contract's own
// are in api/contract.
const (
	MsgMethodNotAllowed = "Method not allowed."
	MsgInternal         = "Internal server error."
	MsgForbidden        = "Forbidden."
)

// Error is an error with an HTTP status and a message meant for the client.
// Details, when set, are added to the body beside "error"; Cause is logged,
// never shown.
type Error struct {
	Status     int
	Message    string
	Details    map[string]any
	RetryAfter time.Duration
	Cause      error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Message, e.Cause)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

// Is makes errors.Is match two Errors of the same status and message, so
// callers can compare with the values below.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status && t.Message == e.Message
}

// With returns a copy of e carrying the detail key=value.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Details = make(map[string]any, len(e.Details)+1)
	for k, v := range e.Details {
		c.Details[k] = v
	}
	c.Details[key] = value
	return &c
}

// Wrap returns a copy of e whose Cause is err.
func (e *Error) Wrap(err error) *Error {
	c := *e
	c.Cause = err
	return &c
}

// Errors of the contract and of the platform. Use With/Wrap to add details;
// never change them in place.
var (
	ErrMissingToken       = &Error{Status: http.StatusUnauthorized, Message: contract.MsgMissingToken}
	ErrInvalidToken       = &Error{Status: http.StatusUnauthorized, Message: contract.MsgInvalidToken}
	ErrInvalidBody        = &Error{Status: http.StatusBadRequest, Message: contract.MsgInvalidBody}
	ErrNoChannel          = &Error{Status: http.StatusBadRequest, Message: contract.MsgNoChannel}
	ErrLoanRule           = &Error{Status: http.StatusBadRequest, Message: contract.MsgLoanRule}
	ErrNotFound           = &Error{Status: http.StatusNotFound, Message: contract.MsgNotFound}
	ErrCampaignNotFound   = &Error{Status: http.StatusNotFound, Message: contract.MsgCampaignNotFound}
	ErrBodyTooLarge       = &Error{Status: http.StatusRequestEntityTooLarge, Message: contract.MsgBodyTooLarge}
	ErrMethodNotAllowed   = &Error{Status: http.StatusMethodNotAllowed, Message: MsgMethodNotAllowed}
	ErrUnavailable        = &Error{Status: http.StatusServiceUnavailable, Message: contract.MsgUnavailable, RetryAfter: 2 * time.Second}
	ErrInternal           = &Error{Status: http.StatusInternalServerError, Message: MsgInternal}
	ErrForbidden          = &Error{Status: http.StatusForbidden, Message: MsgForbidden}
	ErrInvalidQuery       = &Error{Status: http.StatusBadRequest, Message: contract.MsgInvalidQuery}
	ErrIdempotencyKey     = &Error{Status: http.StatusBadRequest, Message: contract.MsgIdempotencyKey}
	ErrTooManyRequests    = &Error{Status: http.StatusTooManyRequests, Message: contract.MsgTooManyRequests}
	ErrKeyReused          = &Error{Status: http.StatusUnprocessableEntity, Message: contract.MsgKeyReused}
	ErrKeyInProgress      = &Error{Status: http.StatusConflict, Message: contract.MsgKeyInProgress, RetryAfter: time.Second}
	ErrInvalidLastEventID = &Error{Status: http.StatusBadRequest, Message: contract.MsgInvalidLastEventID}
	ErrAllOptedOut        = &Error{Status: http.StatusConflict, Message: contract.MsgAllOptedOut}
	ErrNotPermitted       = &Error{Status: http.StatusConflict, Message: contract.MsgNotPermitted}
	ErrOutcomeRecorded    = &Error{Status: http.StatusConflict, Message: contract.MsgOutcomeRecorded}
	ErrAttemptNotFound    = &Error{Status: http.StatusNotFound, Message: contract.MsgAttemptNotFound}
)
