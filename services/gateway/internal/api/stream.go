package api

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/gateway/internal/auth"
	"github.com/rcm-platform/rcm/services/gateway/internal/upstream"
)

// stream relays the feed's Server-Sent Events as they come: every chunk is
// flushed at once, the server's deadlines are lifted for this response,
// and the upstream request ends when the client goes (its context is the
// client's).
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) error {
	p, ok := principal.From(r.Context())
	if !ok {
		return httpx.ErrMissingToken
	}
	if h.Streams != nil {
		if !h.Streams.acquire(p.AccountID) {
			return httpx.ErrTooManyRequests.With("reason", "too many open streams for this account")
		}
		defer h.Streams.release(p.AccountID)
	}
	req, err := h.Stream.Request(r, p, (&url.URL{Path: r.URL.Path}).EscapedPath(), streamQuery(r), nil)
	if err != nil {
		return err
	}
	resp, err := h.Stream.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return upstream.Relay(w, resp)
	}
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	// A read deadline left in place would end the stream: the server's
	// background read of the connection fails when it passes.
	if err := rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	for _, k := range []string{"Content-Type", "Cache-Control"} {
		w.Header().Set(k, resp.Header.Get(k))
	}
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return nil
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return nil // the client went away
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
		}
		if rerr != nil {
			return nil // the feed ended the stream, or the client went away
		}
	}
}

// streamQuery is the query the feed gets: the client's, with a ticket
// replaced by its id, which the feed records so that the ticket opens one
// stream only, on whichever feed instance it arrives. The ticket itself
// does not travel further than the gateway.
func streamQuery(r *http.Request) string {
	if _, ok := r.URL.Query()[auth.TicketParam]; !ok {
		return r.URL.RawQuery
	}
	q := r.URL.Query()
	q.Del(auth.TicketParam)
	if id, ok := auth.TicketFrom(r.Context()); ok {
		q.Set(auth.TicketParam, id)
	}
	return q.Encode()
}
