package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/compliance/internal/checkpoint"
	"golang.org/x/mod/sumdb/tlog"
)

// Tree is the ledger's Merkle tree, as the proof routes read it.
type Tree interface {
	ProveRecord(ctx context.Context, account string, size, index int64) (tlog.RecordProof, error)
	ProveTree(ctx context.Context, account string, to, from int64) (tlog.TreeProof, error)
	LeafData(ctx context.Context, account string, seq int64) ([]byte, bool, error)
}

// Log is what the transparency routes serve from: the signed
// checkpoints, the key that signs them and the tree they sign.
type Log struct {
	Key         *checkpoint.Key
	Checkpoints *checkpoint.Store
	Tree        Tree
	Metrics     *checkpoint.Metrics
}

func (h *Handler) logRoutes(r chi.Router) {
	r.Get("/v1/compliance-log/checkpoint", httpx.Handle(h.Logger, h.checkpoint))
	r.Get("/v1/compliance-log/entries/{seq}/proof", httpx.Handle(h.Logger, h.proof))
	r.Get("/v1/compliance-log/consistency", httpx.Handle(h.Logger, h.consistency))
	r.Get("/v1/compliance-log/verifier-key", httpx.Handle(h.Logger, h.verifierKey))
}

// query parses the request's query, which must be well formed.
func query(r *http.Request) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, httpx.ErrInvalidQuery.With("reason", "the query is not well formed")
	}
	return q, nil
}

func writeText(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func (h *Handler) checkpoint(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	cp, found, err := h.Log.Checkpoints.Latest(ctx, p.AccountID)
	if err != nil {
		return err
	}
	if !found {
		return httpx.ErrNotFound
	}
	writeText(w, cp.Text())
	return nil
}

func (h *Handler) verifierKey(w http.ResponseWriter, r *http.Request) error {
	p, _ := principal.From(r.Context())
	if !h.Log.Key.ValidAccount(p.AccountID) {
		return httpx.ErrNotFound.With("reason", "the account's id cannot name a checkpoint origin")
	}
	vkey, err := h.Log.Key.VerifierKey(p.AccountID)
	if err != nil {
		return err
	}
	writeText(w, []byte(vkey+"\n"))
	return nil
}

// parseSize reads a decimal size or seq: digits only, no sign.
func parseSize(s string) (int64, bool) {
	if s == "" || len(s) > 18 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func (h *Handler) proof(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	seq, ok := parseSize(chi.URLParam(r, "seq"))
	if !ok || seq < 1 {
		return httpx.ErrNotFound
	}
	var cp checkpoint.Checkpoint
	var found bool
	q, err := query(r)
	if err != nil {
		return err
	}
	if q.Has("size") {
		size, ok := parseSize(q.Get("size"))
		if !ok {
			return httpx.ErrInvalidQuery.With("reason", "size must be a tree size")
		}
		cp, found, err = h.Log.Checkpoints.BySize(ctx, p.AccountID, size)
	} else {
		cp, found, err = h.Log.Checkpoints.Latest(ctx, p.AccountID)
	}
	if err != nil {
		return err
	}
	if !found || seq > cp.Size {
		return httpx.ErrNotFound
	}
	data, found, err := h.Log.Tree.LeafData(ctx, p.AccountID, seq)
	if err != nil {
		return err
	}
	if !found {
		return httpx.ErrNotFound
	}
	start := time.Now()
	proof, err := h.Log.Tree.ProveRecord(ctx, p.AccountID, cp.Size, seq-1)
	if err != nil {
		return err
	}
	h.Log.Metrics.Proofs.WithLabelValues("inclusion").Observe(time.Since(start).Seconds())
	var b strings.Builder
	b.WriteString("c2sp.org/tlog-proof@v1\n")
	fmt.Fprintf(&b, "extra %s\n", base64.StdEncoding.EncodeToString(data))
	fmt.Fprintf(&b, "index %d\n", seq-1)
	for _, hash := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(hash[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(cp.Text())
	writeText(w, []byte(b.String()))
	return nil
}

type consistencyProof struct {
	From  int64    `json:"from"`
	To    int64    `json:"to"`
	Proof []string `json:"proof"`
}

func (h *Handler) consistency(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	q, err := query(r)
	if err != nil {
		return err
	}
	from, okFrom := parseSize(q.Get("from"))
	to, okTo := parseSize(q.Get("to"))
	if !okFrom || !okTo || from < 1 || from > to {
		return httpx.ErrInvalidQuery.With("reason", "from and to must be tree sizes with 0 < from ≤ to")
	}
	for _, size := range []int64{from, to} {
		if _, found, err := h.Log.Checkpoints.BySize(ctx, p.AccountID, size); err != nil {
			return err
		} else if !found {
			return httpx.ErrNotFound.With("reason", fmt.Sprintf("the log signed no checkpoint of size %d", size))
		}
	}
	out := consistencyProof{From: from, To: to, Proof: []string{}}
	if from < to {
		start := time.Now()
		proof, err := h.Log.Tree.ProveTree(ctx, p.AccountID, to, from)
		if err != nil {
			return err
		}
		h.Log.Metrics.Proofs.WithLabelValues("consistency").Observe(time.Since(start).Seconds())
		for _, hash := range proof {
			out.Proof = append(out.Proof, base64.StdEncoding.EncodeToString(hash[:]))
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}
