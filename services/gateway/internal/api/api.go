// Package api is the gateway's public HTTP API: the contract of
// spec/rcm-api.md. It validates what clients send, in the contract's order
// (auth, body, channel rule, then the upstream's ownership and loan rules),
// and forwards normalized commands with the verified principal.
package api

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/gateway/internal/auth"
	"github.com/rcm-platform/rcm/services/gateway/internal/upstream"
)

// Handler serves the public routes.
type Handler struct {
	Campaign   *upstream.Service
	Compliance *upstream.Service
	Feed       *upstream.Service
	// Stream reaches the feed for the SSE route: same service, a client
	// without a whole-request timeout.
	Stream *upstream.Service
	// Streams caps each account's open streams; nil for no cap.
	Streams *StreamLimit
	// Tickets mints the stream tickets.
	Tickets *auth.Tickets
	Logger  *slog.Logger
}

// Routes mounts the public routes on r, which must already authenticate.
func (h *Handler) Routes(r chi.Router) {
	r.With(httpx.LimitBody(contract.MaxBody)).Post("/v1/documents/{documentID}/rcm", httpx.Handle(h.Logger, h.start))
	r.With(httpx.LimitBody(contract.MaxBody)).Post("/v1/documents/{documentID}/rcm/opt-out", httpx.Handle(h.Logger, h.optOut))
	r.Get("/v1/documents/{documentID}/rcm", httpx.Handle(h.Logger, h.forward(h.Campaign, httpx.ErrNotFound)))
	r.Get("/v1/documents/{documentID}/rcm/{campaignID}", httpx.Handle(h.Logger, h.forward(h.Campaign, httpx.ErrNotFound)))
	r.Get("/v1/documents/{documentID}/consent", httpx.Handle(h.Logger, h.forward(h.Campaign, httpx.ErrNotFound)))
	r.With(httpx.LimitBody(contract.MaxBody)).Post("/v1/documents/{documentID}/consent", httpx.Handle(h.Logger, h.consent))
	r.With(httpx.LimitBody(contract.MaxBody)).Post("/v1/documents/{documentID}/contact-attempts", httpx.Handle(h.Logger, h.attempt))
	r.With(httpx.LimitBody(contract.MaxBody)).Post("/v1/documents/{documentID}/contact-attempts/{attemptID}/outcome", httpx.Handle(h.Logger, h.outcome))
	r.Get("/v1/documents/{documentID}/contact-attempts", httpx.Handle(h.Logger, h.forward(h.Campaign, httpx.ErrNotFound)))
	r.Get("/v1/documents/{documentID}/contact-clearance", httpx.Handle(h.Logger, h.clearance))
	r.Get("/v1/compliance-log", httpx.Handle(h.Logger, h.forward(h.Compliance, httpx.ErrNotFound)))
	r.Get("/v1/compliance-log/verify", httpx.Handle(h.Logger, h.forward(h.Compliance, httpx.ErrNotFound)))
	r.Get("/v1/compliance-log/checkpoint", httpx.Handle(h.Logger, h.forward(h.Compliance, httpx.ErrNotFound)))
	r.Get("/v1/compliance-log/entries/{seq}/proof", httpx.Handle(h.Logger, h.forward(h.Compliance, httpx.ErrNotFound)))
	r.Get("/v1/compliance-log/consistency", httpx.Handle(h.Logger, h.forward(h.Compliance, httpx.ErrNotFound)))
	r.Get("/v1/compliance-log/verifier-key", httpx.Handle(h.Logger, h.forward(h.Compliance, httpx.ErrNotFound)))
	r.Get("/v1/activity", httpx.Handle(h.Logger, h.forward(h.Feed, httpx.ErrNotFound)))
	r.With(httpx.LimitBody(contract.MaxBody)).Post("/v1/activity/stream-tickets", httpx.Handle(h.Logger, h.streamTicket))
}

// StreamRoutes mounts the live stream on r, which must already
// authenticate, stream tickets included (auth.TicketMiddleware).
func (h *Handler) StreamRoutes(r chi.Router) {
	r.Get("/v1/activity/stream", httpx.Handle(h.Logger, h.stream))
}

// idPattern is what a document id can look like; anything else cannot
// exist and is answered as not found, after the body checks.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// idempotencyKeyRule is the rule a refused Idempotency-Key breaks.
var idempotencyKeyRule = fmt.Sprintf("one key of %d to %d visible ASCII characters", contract.MinIdempotencyKey, contract.MaxIdempotencyKey)

// checkIdempotencyKey refuses an Idempotency-Key header that is empty,
// repeated, too long, or holds anything but visible ASCII.
func checkIdempotencyKey(r *http.Request) error {
	vs := r.Header.Values("Idempotency-Key")
	if len(vs) == 0 {
		return nil
	}
	if len(vs) > 1 || len(vs[0]) < contract.MinIdempotencyKey || len(vs[0]) > contract.MaxIdempotencyKey {
		return httpx.ErrIdempotencyKey.With("reason", idempotencyKeyRule)
	}
	for i := 0; i < len(vs[0]); i++ {
		if c := vs[0][i]; c < 0x21 || c > 0x7e {
			return httpx.ErrIdempotencyKey.With("reason", idempotencyKeyRule)
		}
	}
	return nil
}

// command returns the handler of a command to the campaign service: the
// Idempotency-Key and the body checked by parse, in the contract's order,
// then a path whose ids cannot exist answered as notFound, then the
// normalized body forwarded.
func command[T any](h *Handler, parse func(map[string]json.RawMessage) (T, error), notFound *httpx.Error) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := checkIdempotencyKey(r); err != nil {
			return err
		}
		m, err := httpx.ReadJSONObject(r)
		if err != nil {
			return err
		}
		cmd, err := parse(m)
		if err != nil {
			return err
		}
		return h.send(w, r, h.Campaign, notFound, cmd)
	}
}

func (h *Handler) start(w http.ResponseWriter, r *http.Request) error {
	return command(h, ParseStart, httpx.ErrNotFound)(w, r)
}

func (h *Handler) optOut(w http.ResponseWriter, r *http.Request) error {
	return command(h, ParseOptOut, httpx.ErrCampaignNotFound)(w, r)
}

func (h *Handler) consent(w http.ResponseWriter, r *http.Request) error {
	return command(h, ParseConsent, httpx.ErrNotFound)(w, r)
}

func (h *Handler) attempt(w http.ResponseWriter, r *http.Request) error {
	return command(h, ParseAttempt, httpx.ErrCampaignNotFound)(w, r)
}

func (h *Handler) outcome(w http.ResponseWriter, r *http.Request) error {
	return command(h, ParseOutcome, httpx.ErrAttemptNotFound)(w, r)
}

// clearance checks the query, then the ids, and forwards the normalized
// query: the range of at is checked here, against the gateway's clock.
func (h *Handler) clearance(w http.ResponseWriter, r *http.Request) error {
	q, err := ParseClearance(r.URL.Query(), time.Now())
	if err != nil {
		return err
	}
	if !idPattern.MatchString(chi.URLParam(r, "documentID")) {
		return httpx.ErrNotFound
	}
	if q.HasCampaign && !idPattern.MatchString(q.CampaignID) {
		return httpx.ErrCampaignNotFound
	}
	return h.do(w, r, h.Campaign, q.Encode(), nil)
}

// send forwards cmd as the request's body to svc at the same path. A path
// id that cannot exist is notFound.
func (h *Handler) send(w http.ResponseWriter, r *http.Request, svc *upstream.Service, notFound *httpx.Error, cmd any) error {
	for _, k := range []string{"documentID", "attemptID"} {
		if v := chi.URLParam(r, k); (k == "documentID" || v != "") && !idPattern.MatchString(v) {
			return notFound
		}
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	return h.do(w, r, svc, r.URL.RawQuery, body)
}

// forward passes a read through to svc.
func (h *Handler) forward(svc *upstream.Service, notFound *httpx.Error) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		for _, k := range []string{"documentID", "campaignID"} {
			if v := chi.URLParam(r, k); v != "" && !idPattern.MatchString(v) {
				return notFound
			}
		}
		return h.do(w, r, svc, r.URL.RawQuery, nil)
	}
}

func (h *Handler) do(w http.ResponseWriter, r *http.Request, svc *upstream.Service, rawQuery string, body []byte) error {
	p, ok := principal.From(r.Context())
	if !ok {
		return httpx.ErrMissingToken
	}
	req, err := svc.Request(r, p, (&url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath}).EscapedPath(), rawQuery, body)
	if err != nil {
		return err
	}
	resp, err := svc.Do(req)
	if err != nil {
		return err
	}
	return upstream.Relay(w, resp)
}
