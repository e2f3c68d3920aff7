package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
)

// HandlerFunc is an HTTP handler that returns its error instead of writing
// it; Handle turns the error into the response.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h to http.HandlerFunc: an *Error is answered with its status
// and message, a canceled request with nothing, anything else with 500 after
// logging it with the request id.
func Handle(logger *slog.Logger, h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, r, logger, err)
		}
	}
}

// WriteJSON writes v as the JSON body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"`+MsgInternal+`"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error   string         `json:"error"`
	Details map[string]any `json:"details,omitempty"`
}

// Temporary is implemented by errors of a dependency that a retry later
// may cure (mongox's unavailable store): they are answered 503 with
// Retry-After, like a deadline passed waiting for one.
type Temporary interface{ Temporary() bool }

// answer returns the *Error that err is answered with, or nil for an
// internal failure.
func answer(err error) *Error {
	var he *Error
	if errors.As(err, &he) {
		return he
	}
	var t Temporary
	if (errors.As(err, &t) && t.Temporary()) || errors.Is(err, context.DeadlineExceeded) {
		return ErrUnavailable.Wrap(err)
	}
	return nil
}

// WriteError answers err. It is the only place that writes error bodies.
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	he := answer(err)
	switch {
	case he != nil:
		if he.Status >= 500 {
			logger.ErrorContext(r.Context(), "request failed",
				slog.String("request_id", RequestID(r.Context())), slog.Int("status", he.Status), slog.Any("err", err))
		}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; there is nobody to answer.
		return
	default:
		logger.ErrorContext(r.Context(), "request failed",
			slog.String("request_id", RequestID(r.Context())), slog.Any("err", err))
		he = ErrInternal
	}
	if he.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((he.RetryAfter+999_999_999)/1_000_000_000)))
	}
	switch {
	case he.Is(ErrMissingToken):
		w.Header().Set("WWW-Authenticate", `Bearer`)
	case he.Status == http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	WriteJSON(w, he.Status, ErrorBody{Error: he.Message, Details: he.Details})
}

// Render returns the status and JSON body an error is answered with, for a
// caller that must store the answer (idempotent replays) before writing
// it. ok is false for an internal failure.
func Render(err error) (status int, body []byte, ok bool) {
	he := answer(err)
	if he == nil {
		return 0, nil, false
	}
	b, mErr := json.Marshal(ErrorBody{Error: he.Message, Details: he.Details})
	if mErr != nil {
		return 0, nil, false
	}
	return he.Status, append(b, '\n'), true
}

// WriteRaw writes an already encoded JSON body.
func WriteRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
