// Package api is the campaign service's internal HTTP API: the gateway
// forwards validated commands and reads here with a signed principal. It
// decodes, calls the campaign rules through the store, hands the resulting
// events to the relay, and encodes.
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
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/documents"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// Relay takes freshly written events for publishing.
type Relay interface {
	Enqueue(campaignID string, msgs ...events.Message)
}

// Handler serves the campaign routes.
type Handler struct {
	Store   *store.Store
	Relay   Relay
	Applier *documents.Applier
	NewID   func(prefix string) string
	Now     func() time.Time
	Logger  *slog.Logger
	// Ready reports whether the service finished starting (indexes made,
	// the outbox left by a previous process queued); commands wait for it
	// so that events keep their order across restarts.
	Ready func() bool
}

// Routes mounts the routes on r, which must already require a principal.
func (h *Handler) Routes(r chi.Router) {
	r.Post("/v1/documents/{documentID}/rcm", httpx.Handle(h.Logger, h.start))
	r.Post("/v1/documents/{documentID}/rcm/opt-out", httpx.Handle(h.Logger, h.optOut))
	r.Get("/v1/documents/{documentID}/rcm", httpx.Handle(h.Logger, h.list))
	r.Get("/v1/documents/{documentID}/rcm/{campaignID}", httpx.Handle(h.Logger, h.get))
}

func actorOf(p principal.Principal) events.Actor {
	return events.Actor{Type: events.ActorUser, ID: p.UserID, SessionID: p.SessionID}
}

// decodeStrict decodes the gateway's normalized body into v, refusing
// unknown fields: anything else means the two services disagree.
func decodeStrict(r *http.Request, v any) error {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return httpx.ErrInvalidBody.Wrap(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return httpx.ErrInvalidBody.Wrap(err).With("reason", "body does not match the internal command")
	}
	return nil
}

// contractError maps the rules' and the store's errors to the contract.
func contractError(err error, notFound *httpx.Error) error {
	switch {
	case errors.Is(err, campaign.ErrInvalid):
		return httpx.ErrInvalidBody.Wrap(err).With("reason", err.Error())
	case errors.Is(err, campaign.ErrNoChannel):
		return httpx.ErrNoChannel
	case errors.Is(err, campaign.ErrLoanRule):
		return httpx.ErrLoanRule
	case errors.Is(err, campaign.ErrNotFound):
		return notFound
	case errors.Is(err, mongox.ErrUnavailable), errors.Is(err, store.ErrConflict), errors.Is(err, context.DeadlineExceeded):
		return httpx.ErrUnavailable.Wrap(err)
	default:
		return err
	}
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
	if err := h.ready(); err != nil {
		return err
	}
	ctx := r.Context()
	p, _ := principal.From(ctx)
	var b startBody
	if err := decodeStrict(r, &b); err != nil {
		return err
	}
	if b.SMS == nil || b.Email == nil || b.Call == nil || b.Tone == nil || b.Cadence == nil {
		return httpx.ErrInvalidBody.With("reason", "a required field is missing")
	}
	in := campaign.StartInput{SMS: *b.SMS, Email: *b.Email, Call: *b.Call, Tone: *b.Tone, Cadence: *b.Cadence}
	if b.Notes != nil {
		in.Notes = *b.Notes
	}
	// The contract's order: body, channel rule, ownership, loan rule.
	in, err := in.Normalize()
	if err != nil {
		return contractError(err, httpx.ErrNotFound)
	}
	documentID := chi.URLParam(r, "documentID")
	doc, err := h.Store.Document(ctx, p.AccountID, documentID)
	if err != nil {
		return contractError(err, httpx.ErrNotFound)
	}
	c, e, err := campaign.Start(in, doc, actorOf(p), h.NewID, h.Now())
	if err != nil {
		return contractError(err, httpx.ErrNotFound)
	}
	msg, err := h.Store.Create(ctx, c, e)
	if err != nil {
		return contractError(err, httpx.ErrNotFound)
	}
	h.Relay.Enqueue(c.ID, msg)
	h.Logger.InfoContext(ctx, "campaign started", slog.String("request_id", httpx.RequestID(ctx)),
		slog.String("campaign_id", c.ID), slog.String("event_id", msg.ID), slog.String("account_id", p.AccountID))

	// A loan update may have landed between the document read and the
	// insert, after the read model already ended the document's active
	// campaigns: look again, and end this one too if so. The campaign was
	// started and is recorded either way.
	if cur, err := h.Store.AnyDocument(ctx, documentID); err == nil && !cur.AllowsCampaign() {
		if ended, err := h.Applier.EndIfLoanLeft(ctx, p.AccountID, c.ID, cur); err == nil {
			c = ended
		}
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]any{"campaign": c.Record()})
	return nil
}

type optOutBody struct {
	CampaignID *string `json:"campaignId"`
	Channel    *string `json:"channel"`
	Notes      *string `json:"notes"`
}

func (h *Handler) optOut(w http.ResponseWriter, r *http.Request) error {
	if err := h.ready(); err != nil {
		return err
	}
	ctx := r.Context()
	p, _ := principal.From(ctx)
	var b optOutBody
	if err := decodeStrict(r, &b); err != nil {
		return err
	}
	if b.CampaignID == nil || b.Channel == nil {
		return httpx.ErrInvalidBody.With("reason", "a required field is missing")
	}
	notes := ""
	if b.Notes != nil {
		notes = *b.Notes
	}
	ch, notes, err := campaign.NormalizeOptOut(campaign.Channel(*b.Channel), notes)
	if err != nil {
		return contractError(err, httpx.ErrCampaignNotFound)
	}
	documentID := chi.URLParam(r, "documentID")
	if !ids.Valid(ids.CampaignPrefix, *b.CampaignID) {
		return httpx.ErrCampaignNotFound
	}
	_, msgs, err := h.Store.Update(ctx, p.AccountID, *b.CampaignID, func(c *campaign.Campaign) ([]events.Event, error) {
		if c.DocumentID != documentID {
			return nil, campaign.ErrNotFound
		}
		e, err := c.OptOut(ch, notes, actorOf(p), h.NewID(ids.EventPrefix), h.Now())
		if err != nil {
			return nil, err
		}
		return []events.Event{e}, nil
	})
	if err != nil {
		return contractError(err, httpx.ErrCampaignNotFound)
	}
	h.Relay.Enqueue(*b.CampaignID, msgs...)
	h.Logger.InfoContext(ctx, "opt-out recorded", slog.String("request_id", httpx.RequestID(ctx)),
		slog.String("campaign_id", *b.CampaignID), slog.String("event_id", msgs[0].ID), slog.String("channel", string(ch)))
	httpx.WriteJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

// Page sizes of the campaign list.
const (
	defaultLimit = 50
	maxLimit     = 200
)

var cursorPattern = regexp.MustCompile(`^rcm_[0-9a-hjkmnp-tv-z]{26}$`)

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	documentID := chi.URLParam(r, "documentID")
	limit := defaultLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return httpx.ErrInvalidQuery.With("reason", "limit must be 1 to 200")
		}
		limit = n
	}
	cursor := r.URL.Query().Get("cursor")
	if cursor != "" && !cursorPattern.MatchString(cursor) {
		return httpx.ErrInvalidQuery.With("reason", "cursor is not a cursor this API returned")
	}
	if _, err := h.Store.Document(ctx, p.AccountID, documentID); err != nil {
		// A deleted document still lists the campaigns it had.
		if !errors.Is(err, campaign.ErrNotFound) {
			return contractError(err, httpx.ErrNotFound)
		}
		some, err := h.Store.ListByDocument(ctx, p.AccountID, documentID, "", 1)
		if err != nil {
			return contractError(err, httpx.ErrNotFound)
		}
		if len(some) == 0 {
			return httpx.ErrNotFound
		}
	}
	cs, err := h.Store.ListByDocument(ctx, p.AccountID, documentID, cursor, limit+1)
	if err != nil {
		return contractError(err, httpx.ErrNotFound)
	}
	resp := struct {
		Campaigns  []events.CampaignRecord `json:"campaigns"`
		NextCursor string                  `json:"nextCursor,omitempty"`
	}{Campaigns: []events.CampaignRecord{}}
	if len(cs) > limit {
		cs = cs[:limit]
		resp.NextCursor = cs[limit-1].ID
	}
	for _, c := range cs {
		resp.Campaigns = append(resp.Campaigns, c.Record())
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	id := chi.URLParam(r, "campaignID")
	if !ids.Valid(ids.CampaignPrefix, id) {
		return httpx.ErrCampaignNotFound
	}
	c, err := h.Store.Get(ctx, p.AccountID, id)
	if err != nil {
		return contractError(err, httpx.ErrCampaignNotFound)
	}
	if c.DocumentID != chi.URLParam(r, "documentID") {
		return httpx.ErrCampaignNotFound
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"campaign": c.Record()})
	return nil
}
