// Package api is the compliance service's internal HTTP API: the account's
// log, filtered and paged by seq, the verification of its chain and tree,
// and its signed checkpoints with inclusion and consistency proofs
// (spec/transparency.md).
package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"golang.org/x/mod/sumdb/tlog"
)

// Handler serves the compliance routes.
type Handler struct {
	Ledger *ledger.Ledger
	// Log serves the checkpoints and proofs of the account's tree.
	Log    Log
	Logger *slog.Logger
}

// Routes mounts the routes on r, which must already require a principal.
func (h *Handler) Routes(r chi.Router) {
	r.Get("/v1/compliance-log", httpx.Handle(h.Logger, h.list))
	r.Get("/v1/compliance-log/verify", httpx.Handle(h.Logger, h.verify))
	h.logRoutes(r)
}

type page struct {
	Entries    []auditlog.Entry `json:"entries"`
	NextCursor string           `json:"nextCursor,omitempty"`
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	query, err := parseQuery(r)
	if err != nil {
		return err
	}
	pg, err := h.Ledger.Page(ctx, p.AccountID, query)
	if errors.Is(err, ledger.ErrInvalidCursor) {
		return httpx.ErrInvalidQuery.With("reason", "cursor is not a cursor this API returned")
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, page{Entries: pg.Entries, NextCursor: pg.NextCursor})
	return nil
}

// parseQuery reads a page's filters, order, limit and cursor.
func parseQuery(r *http.Request) (ledger.Query, error) {
	q := r.URL.Query()
	limit, err := httpx.PageLimit(r)
	if err != nil {
		return ledger.Query{}, err
	}
	query := ledger.Query{Limit: limit, Cursor: q.Get("cursor"), DocumentID: q.Get("documentId"), CampaignID: q.Get("campaignId")}
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		query.Ascending = true
	default:
		return ledger.Query{}, httpx.ErrInvalidQuery.With("reason", "order must be asc or desc")
	}
	query.EventType = q.Get("eventType")
	if query.EventType != "" && !events.Known(query.EventType) {
		return ledger.Query{}, httpx.ErrInvalidQuery.With("reason", "eventType must be one of "+strings.Join(events.Types(), ", "))
	}
	return query, nil
}

// verification is the verify answer: the chain's and tree's verdict and,
// with ?checkpoint=, whether the log extends that checkpoint.
type verification struct {
	auditlog.Result
	Checkpoint *checkpointCheck `json:"checkpoint,omitempty"`
}

type checkpointCheck struct {
	TreeSize   int64 `json:"treeSize"`
	Consistent bool  `json:"consistent"`
}

func (h *Handler) verify(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	var given *checkpointCheck
	var givenRoot tlog.Hash
	q, err := query(r)
	if err != nil {
		return err
	}
	if q.Has("checkpoint") {
		msg, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(q.Get("checkpoint"), "="))
		if err != nil {
			return httpx.ErrInvalidQuery.With("reason", "checkpoint must be the base64url of a checkpoint note")
		}
		size, root, err := h.Log.Key.Open(p.AccountID, msg)
		if err != nil {
			return httpx.ErrInvalidQuery.With("reason", "checkpoint is not one of this account's log signed with its key")
		}
		given, givenRoot = &checkpointCheck{TreeSize: size}, root
	}
	v, err := h.Ledger.Verify(ctx, p.AccountID)
	if err != nil {
		return err
	}
	out := verification{Result: v}
	if given != nil {
		// A checkpoint beyond the tree is a rollback: not consistent.
		if given.TreeSize <= v.TreeSize {
			if given.Consistent, err = h.Ledger.Consistent(ctx, p.AccountID, given.TreeSize, givenRoot); err != nil {
				return err
			}
		}
		out.Checkpoint = given
		if !given.Consistent {
			if out.OK {
				out.Reason = fmt.Sprintf("the log does not extend the given checkpoint of size %d", given.TreeSize)
			}
			out.OK = false
			h.Logger.ErrorContext(ctx, "compliance log inconsistent with a checkpoint it signed", slog.String("account_id", p.AccountID),
				slog.Int64("checkpoint_size", given.TreeSize), slog.Int64("tree_size", v.TreeSize))
		}
	}
	if !v.OK {
		h.Logger.ErrorContext(ctx, "compliance log verification failed", slog.String("account_id", p.AccountID),
			slog.Int64("first_broken_seq", *v.FirstBrokenSeq), slog.String("reason", v.Reason))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}
