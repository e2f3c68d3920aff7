package api

import (
	"net/http"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
)

// streamTicket is the answer to POST /v1/activity/stream-tickets.
type streamTicket struct {
	Ticket    string `json:"ticket"`
	ExpiresAt string `json:"expiresAt"`
}

// streamTicket mints a ticket for the caller's stream. It changes no
// state, so an Idempotency-Key is checked for its form like on every POST
// and has no other effect: a retry gets another ticket, and the one it
// replaces expires unused.
func (h *Handler) streamTicket(w http.ResponseWriter, r *http.Request) error {
	if err := checkIdempotencyKey(r); err != nil {
		return err
	}
	p, ok := principal.From(r.Context())
	if !ok {
		return httpx.ErrMissingToken
	}
	tk, err := h.Tickets.Mint(p)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusCreated, streamTicket{Ticket: tk.Value, ExpiresAt: events.FormatTime(tk.ExpiresAt)})
	return nil
}
