// Package api is the campaign service's internal HTTP API: the gateway
// forwards validated commands and reads here with a signed principal. It
// decodes, calls the use cases (package app), and encodes.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/contact"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
)

// Handler serves the campaign routes.
type Handler struct {
	Campaigns *app.Campaigns
	Logger    *slog.Logger
	// Ready reports whether the service finished starting (indexes made,
	// the outbox left by a previous process queued); commands wait for it
	// so that events keep their order across restarts.
	Ready func() bool
	// Nonces claims the nonce of a command that claims it in its own
	// write (ClaimsNonceInCommand) but is answered before it runs.
	Nonces principal.Nonces
}

// Routes mounts the routes on r, which must already require a principal.
func (h *Handler) Routes(r chi.Router) {
	r.Post(startRoute, httpx.Handle(h.Logger, h.start))
	r.Post("/v1/documents/{documentID}/rcm/opt-out", httpx.Handle(h.Logger, h.optOut))
	r.Get("/v1/documents/{documentID}/rcm", httpx.Handle(h.Logger, h.list))
	r.Get("/v1/documents/{documentID}/rcm/{campaignID}", httpx.Handle(h.Logger, h.get))
	r.Get("/v1/documents/{documentID}/consent", httpx.Handle(h.Logger, h.consent))
	r.Post("/v1/documents/{documentID}/consent", httpx.Handle(h.Logger, h.changeConsent))
	r.Post(attemptsRoute, httpx.Handle(h.Logger, h.contactAttempt))
	r.Get("/v1/documents/{documentID}/contact-attempts", httpx.Handle(h.Logger, h.attempts))
	r.Post("/v1/documents/{documentID}/contact-attempts/{attemptID}/outcome", httpx.Handle(h.Logger, h.outcome))
	r.Get("/v1/documents/{documentID}/contact-clearance", httpx.Handle(h.Logger, h.clearance))
}

// The routes of the commands that claim their nonce in their own write.
const (
	startRoute    = "/v1/documents/{documentID}/rcm"
	attemptsRoute = "/v1/documents/{documentID}/contact-attempts"
)

// ClaimsNonceInCommand names the requests whose command claims the
// principal's nonce in its own write (principal.Signer.ClaimInCommand):
// a start and a contact attempt without an Idempotency-Key, whose one
// write of the document's record carries it (store.Start,
// store.UpdateDocument). With a key the nonce is claimed before the
// command runs: a replay must be refused, not answered from the key's
// stored answer.
func ClaimsNonceInCommand(r *http.Request) bool {
	if r.Method != http.MethodPost || r.Header.Get("Idempotency-Key") != "" {
		return false
	}
	rc := chi.RouteContext(r.Context())
	return rc != nil && (rc.RoutePattern() == startRoute || rc.RoutePattern() == attemptsRoute)
}

// decodeStrict decodes the gateway's normalized body into v, refusing
// unknown fields (anything else means the two services disagree), and
// returns the body as received.
func decodeStrict(r *http.Request, v any) ([]byte, error) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, httpx.ErrInvalidBody.Wrap(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, httpx.ErrInvalidBody.Wrap(err).With("reason", "body does not match the internal command")
	}
	return raw, nil
}

func (h *Handler) ready() error {
	if h.Ready != nil && !h.Ready() {
		return httpx.ErrUnavailable.With("reason", "starting")
	}
	return nil
}

type startBody struct {
	SMS     *bool   `json:"sms"`
	Email   *bool   `json:"email"`
	Call    *bool   `json:"call"`
	Tone    *string `json:"tone"`
	Cadence *string `json:"cadence"`
	Notes   *string `json:"notes"`
}

func (h *Handler) start(w http.ResponseWriter, r *http.Request) error {
	return command(h, w, r, func(b startBody) (app.StartInput, bool) {
		in := app.StartInput{DocumentID: chi.URLParam(r, "documentID")}
		if b.SMS == nil || b.Email == nil || b.Call == nil || b.Tone == nil || b.Cadence == nil {
			return in, false
		}
		in.StartInput = campaign.StartInput{SMS: *b.SMS, Email: *b.Email, Call: *b.Call, Tone: *b.Tone, Cadence: *b.Cadence, Notes: deref(b.Notes)}
		return in, true
	}, h.Campaigns.Start)
}

// command serves a command: the readiness gate, the gateway's normalized
// body decoded strictly into B, the use case's input built from it (false
// when a required field is missing), the use case run and its answer
// written.
func command[B, I any](h *Handler, w http.ResponseWriter, r *http.Request, input func(B) (I, bool),
	run func(context.Context, app.Request, I) (app.Answer, error)) error {
	if err := h.ready(); err != nil {
		return h.refuse(r, err)
	}
	var b B
	raw, err := decodeStrict(r, &b)
	if err != nil {
		return h.refuse(r, err)
	}
	in, ok := input(b)
	if !ok {
		return h.refuse(r, httpx.ErrInvalidBody.With("reason", "a required field is missing"))
	}
	ans, err := run(r.Context(), request(r, raw), in)
	if err != nil {
		return err
	}
	writeAnswer(w, ans)
	return nil
}

// refuse answers cause for a command that did not run, claiming the
// principal's nonce first if the command was to claim it: a replay once
// the service is ready must be refused too.
func (h *Handler) refuse(r *http.Request, cause error) error {
	if h.Nonces == nil || !ClaimsNonceInCommand(r) {
		return cause
	}
	p, _ := principal.From(r.Context())
	if err := h.Nonces.Claim(r.Context(), p.Nonce, time.Unix(p.Expires, 0)); err != nil {
		if errors.Is(err, principal.ErrReplayed) {
			return httpx.ErrForbidden.Wrap(err)
		}
		return err
	}
	return cause
}

// deref is the optional field's value, "" when absent.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// HeaderReplayed marks an answer replayed for an Idempotency-Key.
const HeaderReplayed = "Idempotent-Replayed"

// request is how r arrived, for a command: its principal, and its
// Idempotency-Key with the fingerprint of what it asks.
func request(r *http.Request, body []byte) app.Request {
	p, _ := principal.From(r.Context())
	req := app.Request{Principal: p, Key: r.Header.Get("Idempotency-Key"), ClaimNonce: ClaimsNonceInCommand(r)}
	if req.Key != "" {
		req.Fingerprint = idempotency.Fingerprint(r.Method, r.URL.Path, body)
	}
	return req
}

func writeAnswer(w http.ResponseWriter, ans app.Answer) {
	if ans.Replayed {
		w.Header().Set(HeaderReplayed, "true")
	}
	httpx.WriteRaw(w, ans.Status, ans.Body)
}

type optOutBody struct {
	CampaignID *string `json:"campaignId"`
	Channel    *string `json:"channel"`
	Notes      *string `json:"notes"`
}

func (h *Handler) optOut(w http.ResponseWriter, r *http.Request) error {
	return command(h, w, r, func(b optOutBody) (app.OptOutInput, bool) {
		if b.CampaignID == nil || b.Channel == nil {
			return app.OptOutInput{}, false
		}
		return app.OptOutInput{DocumentID: chi.URLParam(r, "documentID"), CampaignID: *b.CampaignID,
			Channel: campaign.Channel(*b.Channel), Notes: deref(b.Notes)}, true
	}, h.Campaigns.OptOut)
}

// pageQuery reads a list's cursor, which must be of the shape the list
// hands out, and its page size.
func pageQuery(r *http.Request, cursorShape *regexp.Regexp) (cursor string, limit int, err error) {
	if limit, err = httpx.PageLimit(r); err != nil {
		return "", 0, err
	}
	cursor = r.URL.Query().Get("cursor")
	if cursor != "" && !cursorShape.MatchString(cursor) {
		return "", 0, httpx.ErrInvalidQuery.With("reason", "cursor is not a cursor this API returned")
	}
	return cursor, limit, nil
}

var cursorPattern = regexp.MustCompile(`^rcm_[0-9a-hjkmnp-tv-z]{26}$`)

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	cursor, limit, err := pageQuery(r, cursorPattern)
	if err != nil {
		return err
	}
	page, err := h.Campaigns.List(ctx, p, chi.URLParam(r, "documentID"), cursor, limit)
	if err != nil {
		return err
	}
	resp := struct {
		Campaigns  []events.CampaignRecord `json:"campaigns"`
		NextCursor string                  `json:"nextCursor,omitempty"`
	}{Campaigns: []events.CampaignRecord{}, NextCursor: page.Next}
	for _, c := range page.Campaigns {
		resp.Campaigns = append(resp.Campaigns, c.Record())
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	c, err := h.Campaigns.Campaign(ctx, p, chi.URLParam(r, "documentID"), chi.URLParam(r, "campaignID"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"campaign": c.Record()})
	return nil
}

func (h *Handler) consent(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	c, err := h.Campaigns.Consent(ctx, p, chi.URLParam(r, "documentID"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, c)
	return nil
}

type consentBody struct {
	Channel *string `json:"channel"`
	Status  *string `json:"status"`
	Basis   *string `json:"basis"`
	Notes   *string `json:"notes"`
}

func (h *Handler) changeConsent(w http.ResponseWriter, r *http.Request) error {
	return command(h, w, r, func(b consentBody) (app.ConsentInput, bool) {
		if b.Channel == nil || b.Status == nil || b.Basis == nil {
			return app.ConsentInput{}, false
		}
		return app.ConsentInput{DocumentID: chi.URLParam(r, "documentID"), Channel: *b.Channel, Status: *b.Status,
			Basis: *b.Basis, Notes: deref(b.Notes)}, true
	}, h.Campaigns.ChangeConsent)
}

type attemptBody struct {
	CampaignID *string `json:"campaignId"`
	Channel    *string `json:"channel"`
	Direction  *string `json:"direction"`
	Notes      *string `json:"notes"`
}

func (h *Handler) contactAttempt(w http.ResponseWriter, r *http.Request) error {
	return command(h, w, r, func(b attemptBody) (app.AttemptInput, bool) {
		if b.Channel == nil {
			return app.AttemptInput{}, false
		}
		return app.AttemptInput{DocumentID: chi.URLParam(r, "documentID"), Channel: *b.Channel,
			CampaignID: deref(b.CampaignID), Direction: deref(b.Direction), Notes: deref(b.Notes)}, true
	}, h.Campaigns.ContactAttempt)
}

type outcomeBody struct {
	Outcome *string `json:"outcome"`
	Notes   *string `json:"notes"`
}

func (h *Handler) outcome(w http.ResponseWriter, r *http.Request) error {
	return command(h, w, r, func(b outcomeBody) (app.OutcomeInput, bool) {
		if b.Outcome == nil {
			return app.OutcomeInput{}, false
		}
		return app.OutcomeInput{DocumentID: chi.URLParam(r, "documentID"), AttemptID: chi.URLParam(r, "attemptID"),
			Outcome: *b.Outcome, Notes: deref(b.Notes)}, true
	}, h.Campaigns.RecordOutcome)
}

var attemptCursor = regexp.MustCompile(`^att_[0-9a-hjkmnp-tv-z]{26}$`)

func (h *Handler) attempts(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	cursor, limit, err := pageQuery(r, attemptCursor)
	if err != nil {
		return err
	}
	page, err := h.Campaigns.Attempts(ctx, p, chi.URLParam(r, "documentID"), cursor, limit)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, page)
	return nil
}

func (h *Handler) clearance(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	q := r.URL.Query()
	in := app.ClearanceInput{DocumentID: chi.URLParam(r, "documentID"), CampaignID: q.Get("campaignId"), Channel: q.Get("channel")}
	if !contact.ValidChannel(in.Channel) {
		return httpx.ErrInvalidQuery.With("reason", "channel must be sms, email or call")
	}
	if v := q.Get("at"); v != "" {
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return httpx.ErrInvalidQuery.With("reason", "at must be an RFC 3339 time")
		}
		in.At = at
	}
	c, err := h.Campaigns.Clear(ctx, p, in)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, c)
	return nil
}
