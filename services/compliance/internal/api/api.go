// Package api is the compliance service's internal HTTP API: the account's
// log, filtered and paged by seq, and the verification of its chain.
package api

import (
	"log/slog"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
)

// Handler serves the compliance routes.
type Handler struct {
	Ledger *ledger.Ledger
	Logger *slog.Logger
}

// Routes mounts the routes on r, which must already require a principal.
func (h *Handler) Routes(r chi.Router) {
	r.Get("/v1/compliance-log", httpx.Handle(h.Logger, h.list))
	r.Get("/v1/compliance-log/verify", httpx.Handle(h.Logger, h.verify))
}

// scanBudget bounds the entries a page walks looking for matches of its
// filters, so that a rare filter cannot make one request read a whole
// log; the answer's nextCursor says where to go on.
const scanBudget = 1000

type page struct {
	Entries    []auditlog.Entry `json:"entries"`
	NextCursor string           `json:"nextCursor,omitempty"`
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	q := r.URL.Query()
	limit, err := httpx.PageLimit(r)
	if err != nil {
		return err
	}
	step := int64(-1)
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		step = 1
	default:
		return httpx.ErrInvalidQuery.With("reason", "order must be asc or desc")
	}
	eventType := q.Get("eventType")
	switch eventType {
	case "", events.TypeCampaignStarted, events.TypeOptOut, events.TypeCampaignEnded:
	default:
		return httpx.ErrInvalidQuery.With("reason", "eventType must be campaign_started, opt_out or campaign_ended")
	}
	documentID, campaignID := q.Get("documentId"), q.Get("campaignId")

	head, err := h.Ledger.Head(ctx, p.AccountID)
	if err != nil {
		return err
	}
	// The cursor is the seq of the last entry the previous page walked.
	from := head
	if step > 0 {
		from = 1
	}
	if v := q.Get("cursor"); v != "" {
		c, err := strconv.ParseInt(v, 10, 64)
		if err != nil || c < 0 {
			return httpx.ErrInvalidQuery.With("reason", "cursor is not a cursor this API returned")
		}
		from = c + step
	}
	out := page{Entries: []auditlog.Entry{}}
	walked, last := 0, int64(0)
	for walked < scanBudget && len(out.Entries) < limit && from >= 1 && from <= head {
		n := min(int64(limit-len(out.Entries)), int64(scanBudget-walked))
		if step > 0 {
			n = min(n, head-from+1)
		} else {
			n = min(n, from)
		}
		slots, err := h.Ledger.Range(ctx, p.AccountID, from, step, int(n))
		if err != nil {
			return err
		}
		for _, s := range slots {
			walked++
			last = s.Seq
			if !s.Found {
				continue
			}
			e := s.Entry
			if (documentID != "" && e.DocumentID != documentID) || (campaignID != "" && e.CampaignID != campaignID) || (eventType != "" && e.EventType != eventType) {
				continue
			}
			out.Entries = append(out.Entries, e)
		}
		from = last + step
	}
	if last != 0 && from >= 1 && from <= head {
		out.NextCursor = strconv.FormatInt(last, 10)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) verify(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	v, err := h.Ledger.Verify(ctx, p.AccountID)
	if err != nil {
		return err
	}
	if !v.OK {
		h.Logger.ErrorContext(ctx, "compliance log verification failed", slog.String("account_id", p.AccountID),
			slog.Int64("first_broken_seq", *v.FirstBrokenSeq), slog.String("reason", v.Reason))
	}
	httpx.WriteJSON(w, http.StatusOK, v)
	return nil
}
