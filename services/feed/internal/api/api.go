// Package api is the feed service's internal HTTP API, called by the
// gateway with a signed principal: the account's activity history, newest
// first with cursor pagination, and its live stream over Server-Sent
// Events that resumes from history with no gap and no duplicate.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/rcm-platform/rcm/services/feed/internal/hub"
	"golang.org/x/sync/errgroup"
)

// DefaultHeartbeat is how often an idle stream gets a comment, so that
// proxies and clients see the connection alive.
const DefaultHeartbeat = 15 * time.Second

// DefaultMaxStreams is how many streams one instance holds open at most.
// A stream costs about 58 KiB of resident memory once items flow (measured
// with rcmbench's fan-out: RSS growth over 2,000 streams after delivery,
// 57.3 KiB; over 10,000, 54.4 KiB) on a base of about 64 MiB, so 5,000
// streams take about 350 MiB: inside the 512 MiB the deployment gives the
// feed, with room for the garbage collector. Past the cap a client is told
// to retry (503), and reaches another instance or this one once a stream
// closed, instead of the instance being killed for its memory with every
// stream it holds.
const DefaultMaxStreams = 5000

// errInvalidLastEventID answers a Last-Event-ID past the account's head:
// no stream of this API sent it, and resuming from it would hold back
// every item up to it.
var errInvalidLastEventID = httpx.ErrInvalidLastEventID

// Store reads an account's stored items; a *seqlog.Log is one.
type Store interface {
	LoadHead(ctx context.Context, account, linkField string) (seqlog.Head, error)
	Get(ctx context.Context, account string, seq int64, v any) (found bool, err error)
}

// Config is what a Handler needs.
type Config struct {
	Store Store
	Hub   *hub.Hub
	// Heartbeat is the interval of the stream's heartbeat comments
	// (DefaultHeartbeat when 0).
	Heartbeat time.Duration
	// MaxStreams caps the streams open at once on this instance
	// (DefaultMaxStreams when 0).
	MaxStreams int
	// Stop, once closed, ends every open stream: the server's shutdown
	// does not end long-lived responses on its own.
	Stop <-chan struct{}
	// Now is the clock of the delivery latency (time.Now when nil).
	Now    func() time.Time
	Logger *slog.Logger
}

// Handler serves the activity routes.
type Handler struct {
	cfg  Config
	open atomic.Int64 // streams open, or being opened

	deliveries *prometheus.CounterVec
	rejected   prometheus.Counter
	latency    prometheus.Histogram
	streams    prometheus.Gauge
}

// New returns a Handler whose metrics are registered on reg.
func New(cfg Config, reg prometheus.Registerer) *Handler {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{
		cfg: cfg,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rcm_feed_deliveries_total", Help: "Items written to stream subscribers, by source (history: sent on resume or to fill a gap; live).",
		}, []string{"source"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rcm_feed_delivery_latency_seconds", Help: "Time from an event's occurredAt until its item was written to a live subscriber.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rcm_feed_streams_open", Help: "Open SSE streams.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_streams_rejected_total", Help: "Streams refused with 503 because the instance held its maximum.",
		}),
	}
	reg.MustRegister(h.deliveries, h.latency, h.streams, h.rejected)
	for _, source := range []string{"history", "live"} {
		h.deliveries.WithLabelValues(source)
	}
	return h
}

// Routes mounts the history route on r, which must already require a
// principal.
func (h *Handler) Routes(r chi.Router) {
	r.Get("/v1/activity", httpx.Handle(h.cfg.Logger, h.list))
}

// StreamRoutes mounts the stream route on r, which must already require a
// principal and must not put a deadline on the request: a stream lasts as
// long as its client stays.
func (h *Handler) StreamRoutes(r chi.Router) {
	r.Get("/v1/activity/stream", httpx.Handle(h.cfg.Logger, h.stream))
}

// parallelReads bounds the lookups by _id one request runs at once.
const parallelReads = 8

// read returns the stored items seqs of account, in the order of seqs,
// leaving out any that is not stored.
func (h *Handler) read(ctx context.Context, account string, seqs []int64) ([]activity.Item, error) {
	items := make([]activity.Item, len(seqs))
	found := make([]bool, len(seqs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelReads)
	for i, seq := range seqs {
		g.Go(func() error {
			var rec activity.Record
			ok, err := h.cfg.Store.Get(gctx, account, seq, &rec)
			if err != nil {
				return err
			}
			items[i], found[i] = rec.Item, ok
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := items[:0]
	for i, it := range items {
		if found[i] {
			out = append(out, it)
		}
	}
	return out, nil
}

type page struct {
	Items      []activity.Item `json:"items"`
	NextCursor string          `json:"nextCursor,omitempty"`
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	q := r.URL.Query()
	limit, err := httpx.PageLimit(r)
	if err != nil {
		return err
	}
	var before int64 = -1
	if v := q.Get("cursor"); v != "" {
		c, err := activity.ParseCursor(v)
		if err != nil {
			return httpx.ErrInvalidQuery.With("reason", "cursor is not a cursor this API returned")
		}
		before = c
	}
	head, err := h.cfg.Store.LoadHead(ctx, p.AccountID, "")
	if err != nil {
		return err
	}
	top := head.Seq
	if before >= 0 {
		top = min(top, before-1)
	}
	var seqs []int64
	for s := top; s >= 1 && len(seqs) < limit; s-- {
		seqs = append(seqs, s)
	}
	items, err := h.read(ctx, p.AccountID, seqs)
	if err != nil {
		return err
	}
	resp := page{Items: items}
	if n := len(seqs); n > 0 && seqs[n-1] > 1 {
		resp.NextCursor = activity.FormatCursor(seqs[n-1])
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// errClientGone ends a stream whose client stopped reading.
var errClientGone = errors.New("stream client gone")

func (h *Handler) stream(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	account := p.AccountID
	resume := r.Header.Get("Last-Event-ID")
	if resume == "" {
		resume = r.URL.Query().Get("lastEventId")
	}
	var after int64 = -1
	if resume != "" {
		c, err := activity.ParseCursor(resume)
		if err != nil {
			return httpx.ErrInvalidQuery.With("reason", "Last-Event-ID is not a cursor this API returned")
		}
		after = c
	}
	if h.open.Add(1) > int64(h.cfg.MaxStreams) {
		h.open.Add(-1)
		h.rejected.Inc()
		return httpx.ErrUnavailable.With("reason", "this instance holds as many streams as it may")
	}
	defer h.open.Add(-1)

	// Subscribe before reading the head: an item stored after the head
	// was read is then surely seen live, one stored before is in history,
	// and one seen both ways is sent once by seq.
	sub := h.cfg.Hub.Subscribe(account)
	defer sub.Close()
	head, err := h.cfg.Store.LoadHead(ctx, account, "")
	if err != nil {
		return err
	}
	// An item is stored before it is published, so a cursor any stream
	// sent is at or below the head as read now.
	if after > head.Seq {
		return errInvalidLastEventID.With("head", head.Seq)
	}

	rc := http.NewResponseController(w)
	// The server's write deadline suits requests, not a stream: it would
	// cut the stream after 30 s. Each write sets a deadline of its own.
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		return fmt.Errorf("stream: clear write deadline: %w", err)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, rc: rc}
	if err := s.flush(); err != nil {
		return nil
	}
	h.streams.Inc()
	defer h.streams.Dec()

	last := head.Seq
	if after >= 0 {
		last = after
		if err := h.sendStored(ctx, s, account, &last, head.Seq); err != nil {
			return h.endStream(ctx, account, err)
		}
	}

	tick := time.NewTicker(h.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.cfg.Stop:
			return nil
		case <-tick.C:
			if err := s.comment("heartbeat"); err != nil {
				return nil
			}
		case e, ok := <-sub.C():
			if !ok {
				h.cfg.Logger.Info("stream subscriber dropped", slog.String("request_id", httpx.RequestID(ctx)),
					slog.String("account_id", account), slog.Any("reason", sub.Err()))
				return nil
			}
			seq := e.Item.Seq
			if seq <= last {
				continue
			}
			if seq > last+1 {
				// Items between last and this one were published out
				// of order or before this instance saw the topic: they
				// are stored, so take them from there.
				if err := h.sendStored(ctx, s, account, &last, seq-1); err != nil {
					return h.endStream(ctx, account, err)
				}
			}
			if err := s.item(e.Item, e.JSON); err != nil {
				return nil
			}
			last = seq
			h.deliveries.WithLabelValues("live").Inc()
			if at, err := events.ParseTime(e.Item.OccurredAt); err == nil {
				h.latency.Observe(h.cfg.Now().Sub(at).Seconds())
			}
		}
	}
}

// endStream logs why a stream that already started had to end. The
// response is under way, so there is no status left to answer with; the
// client reconnects with its Last-Event-ID.
func (h *Handler) endStream(ctx context.Context, account string, err error) error {
	if !errors.Is(err, errClientGone) && ctx.Err() == nil {
		h.cfg.Logger.Warn("stream ended", slog.String("request_id", httpx.RequestID(ctx)),
			slog.String("account_id", account), slog.Any("err", err))
	}
	return nil
}

// historyPage is how many stored items one round of lookups reads.
const historyPage = 64

// sendStored writes the stored items after *last up to and including upTo,
// in order, advancing *last.
func (h *Handler) sendStored(ctx context.Context, s *sse, account string, last *int64, upTo int64) error {
	for *last < upTo {
		var seqs []int64
		for seq := *last + 1; seq <= upTo && len(seqs) < historyPage; seq++ {
			seqs = append(seqs, seq)
		}
		items, err := h.read(ctx, account, seqs)
		if err != nil {
			return err
		}
		for i, it := range items {
			if it.Seq != seqs[i] {
				return fmt.Errorf("item %d of %s is not stored", seqs[i], account)
			}
			data, err := json.Marshal(it)
			if err != nil {
				return fmt.Errorf("encode item %d of %s: %w", it.Seq, account, err)
			}
			if err := s.item(it, data); err != nil {
				return errClientGone
			}
			*last = it.Seq
			h.deliveries.WithLabelValues("history").Inc()
		}
		if len(items) < len(seqs) {
			return fmt.Errorf("item %d of %s is not stored", seqs[len(items)], account)
		}
	}
	return nil
}
