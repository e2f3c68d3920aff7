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
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/documents"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// Relay takes freshly written events for publishing.
type Relay interface {
	Enqueue(campaignID string, msgs ...events.Message)
	// Missed says events may wait in the outbox that nothing handed
	// the relay (a command recovered from an interrupted attempt).
	Missed()
}

// Handler serves the campaign routes.
type Handler struct {
	Store   *store.Store
	Relay   Relay
	Applier *documents.Applier
	NewID   func(prefix string) string
	Now     func() time.Time
	Logger  *slog.Logger
	// Idempotency remembers answers per Idempotency-Key; nil turns the
	// header off.
	Idempotency *idempotency.Store
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

// contractError maps the rules' errors to the contract. An unavailable
// store needs no mapping: httpx answers every temporary failure with 503.
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
	case errors.Is(err, store.ErrConflict):
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
	raw, err := decodeStrict(r, &b)
	if err != nil {
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
	in, err = in.Normalize()
	if err != nil {
		return contractError(err, httpx.ErrNotFound)
	}
	documentID := chi.URLParam(r, "documentID")
	return h.once(w, r, p, raw, h.NewID(ids.CampaignPrefix), func(campaignID string, recovering bool) (int, any, error) {
		if recovering {
			// The first attempt may have written the campaign: the
			// campaign id chosen at the claim tells.
			c, err := h.Store.Get(ctx, p.AccountID, campaignID)
			if err == nil {
				return http.StatusCreated, map[string]any{"campaign": h.settle(ctx, p, c).Record()}, nil
			}
			if !errors.Is(err, campaign.ErrNotFound) {
				return 0, nil, contractError(err, httpx.ErrNotFound)
			}
		}
		c, err := h.startCampaign(ctx, p, documentID, in, campaignID)
		if errors.Is(err, store.ErrExists) {
			// An earlier attempt's insert landed meanwhile: answer it.
			if c, err = h.Store.Get(ctx, p.AccountID, campaignID); err == nil {
				h.Relay.Missed()
				return http.StatusCreated, map[string]any{"campaign": h.settle(ctx, p, c).Record()}, nil
			}
		}
		if err != nil {
			return 0, nil, contractError(err, httpx.ErrNotFound)
		}
		return http.StatusCreated, map[string]any{"campaign": c.Record()}, nil
	})
}

// startCampaign starts a campaign with the given id on documentID.
func (h *Handler) startCampaign(ctx context.Context, p principal.Principal, documentID string, in campaign.StartInput, campaignID string) (campaign.Campaign, error) {
	doc, err := h.Store.Document(ctx, p.AccountID, documentID)
	if err != nil {
		// Read before any write.
		return campaign.Campaign{}, idempotency.NothingWritten(err)
	}
	newID := func(prefix string) string {
		if prefix == ids.CampaignPrefix {
			return campaignID
		}
		return h.NewID(prefix)
	}
	c, e, err := campaign.Start(in, doc, actorOf(p), newID, h.Now())
	if err != nil {
		return campaign.Campaign{}, err
	}
	msg, err := h.Store.Create(ctx, c, e)
	if err != nil {
		return campaign.Campaign{}, err
	}
	h.Relay.Enqueue(c.ID, msg)
	h.Logger.InfoContext(ctx, "campaign started", slog.String("request_id", httpx.RequestID(ctx)),
		slog.String("campaign_id", c.ID), slog.String("event_id", msg.ID), slog.String("account_id", p.AccountID))

	return h.settle(ctx, p, c), nil
}

// settle returns c after a start wrote it. A loan update may have landed
// between the document read and the insert, after the read model already
// ended the document's active campaigns: look again, and end c too if so.
// The campaign was started and is recorded either way.
func (h *Handler) settle(ctx context.Context, p principal.Principal, c campaign.Campaign) campaign.Campaign {
	if !c.Active {
		return c
	}
	if cur, err := h.Store.AnyDocument(ctx, c.DocumentID); err == nil && !cur.AllowsCampaign() {
		if ended, err := h.Applier.EndIfLoanLeft(ctx, p.AccountID, c.ID, cur); err == nil {
			c = ended
		}
	}
	return c
}

// HeaderReplayed marks an answer replayed for an Idempotency-Key.
const HeaderReplayed = "Idempotent-Replayed"

// once runs a command at most once per Idempotency-Key of the account: the
// first time it runs cmd and stores its answer (a success or a contract
// error), later it answers what was stored. Without a key it just runs
// cmd. cmd's first argument is the campaign id the command acts on (chosen
// at the first attempt); recovering says an earlier attempt was cut short
// and cmd must find what it wrote and answer that, or prove it wrote
// nothing and run.
//
// A failure never frees the key unless cmd proves it wrote nothing
// (idempotency.NothingWritten, and only on a fresh claim): any other
// failure may have come after a write whose answer was lost (a store reply
// past the deadline, a timeout, a failover), so the claim is kept,
// interrupted, and the next request with the key recovers at once. Every
// command that changes state runs through once and answers recovering.
func (h *Handler) once(w http.ResponseWriter, r *http.Request, p principal.Principal, body []byte, campaignID string,
	cmd func(campaignID string, recovering bool) (int, any, error)) error {
	key := r.Header.Get("Idempotency-Key")
	if key == "" || h.Idempotency == nil {
		status, v, err := cmd(campaignID, false)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, status, v)
		return nil
	}
	ctx := r.Context()
	rec, outcome, err := h.Idempotency.Begin(ctx, p.AccountID, key, idempotency.Fingerprint(r.Method, r.URL.Path, body), campaignID)
	switch {
	case errors.Is(err, idempotency.ErrMismatch):
		return httpx.ErrKeyReused
	case errors.Is(err, idempotency.ErrInProgress):
		return httpx.ErrKeyInProgress
	case err != nil:
		return contractError(err, httpx.ErrNotFound)
	case outcome == idempotency.Replay:
		w.Header().Set(HeaderReplayed, "true")
		httpx.WriteRaw(w, rec.Status, []byte(rec.Body))
		return nil
	}
	recovering := outcome == idempotency.Recover
	status, v, err := cmd(rec.CampaignID, recovering)
	if recovering {
		// The interrupted attempt's events, if it wrote any, were never
		// handed to the relay.
		h.Relay.Missed()
	}
	var raw []byte
	if err != nil {
		s, b, ok := httpx.Render(err)
		if !ok || s >= 500 {
			h.keepClaim(context.WithoutCancel(ctx), rec, recovering, err)
			return err
		}
		status, raw = s, b
	} else if raw, err = json.Marshal(v); err != nil {
		return err
	} else {
		raw = append(raw, '\n')
	}
	if err := h.Idempotency.Finish(context.WithoutCancel(ctx), rec, status, raw); err != nil {
		// The command ran; its answer is not stored. A retry finds the
		// claim pending, then stale, and recovers the answer from what
		// the command wrote.
		h.Logger.WarnContext(ctx, "idempotent answer not stored", slog.String("request_id", httpx.RequestID(ctx)), slog.Any("err", err))
	}
	httpx.WriteRaw(w, status, raw)
	return nil
}

// keepClaim settles the claim of a command that failed without an answer
// to store: released if the command proved it wrote nothing, else
// interrupted for the next request to recover.
func (h *Handler) keepClaim(ctx context.Context, rec idempotency.Record, recovering bool, cause error) {
	if !recovering && idempotency.IsNothingWritten(cause) {
		h.Idempotency.Release(ctx, rec)
		return
	}
	if err := h.Idempotency.Interrupt(ctx, rec); err != nil {
		// The claim stays pending: a retry recovers it once stale.
		h.Logger.WarnContext(ctx, "idempotency claim not marked interrupted", slog.String("request_id", httpx.RequestID(ctx)), slog.Any("err", err))
	}
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
	raw, err := decodeStrict(r, &b)
	if err != nil {
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
	campaignID := *b.CampaignID
	key := r.Header.Get("Idempotency-Key")
	return h.once(w, r, p, raw, campaignID, func(campaignID string, _ bool) (int, any, error) {
		if !ids.Valid(ids.CampaignPrefix, campaignID) {
			return 0, nil, httpx.ErrCampaignNotFound
		}
		_, msgs, err := h.Store.Update(ctx, p.AccountID, campaignID, func(c *campaign.Campaign) ([]events.Event, error) {
			if c.DocumentID != documentID {
				return nil, campaign.ErrNotFound
			}
			// A retry of a request whose first attempt was cut short
			// after its write: recorded already, nothing more to do. It
			// is looked for on every attempt, not only when recovering:
			// the revision compare-and-set makes a late write of the
			// first attempt and this one exclusive, and whichever lands
			// second finds the other.
			if c.RecordedRequest(key, h.Now().Add(-idempotency.Window)) {
				return nil, nil
			}
			e, err := c.OptOutOnce(ch, notes, key, actorOf(p), h.NewID(ids.EventPrefix), h.Now())
			if err != nil {
				return nil, err
			}
			return []events.Event{e}, nil
		})
		if err != nil {
			return 0, nil, contractError(err, httpx.ErrCampaignNotFound)
		}
		if len(msgs) > 0 {
			h.Relay.Enqueue(campaignID, msgs...)
			h.Logger.InfoContext(ctx, "opt-out recorded", slog.String("request_id", httpx.RequestID(ctx)),
				slog.String("campaign_id", campaignID), slog.String("event_id", msgs[0].ID), slog.String("channel", string(ch)))
		}
		return http.StatusOK, map[string]bool{"ok": true}, nil
	})
}

var cursorPattern = regexp.MustCompile(`^rcm_[0-9a-hjkmnp-tv-z]{26}$`)

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	documentID := chi.URLParam(r, "documentID")
	limit, err := httpx.PageLimit(r)
	if err != nil {
		return err
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
