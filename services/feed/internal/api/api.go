// Package api is the feed service's internal HTTP API, called by the
// gateway with a signed principal: the account's activity history, newest
// first with cursor pagination, and its live stream over Server-Sent
// Events that resumes from history with no gap and no duplicate.
package api

import (
	"context"
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
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/rcm-platform/rcm/services/feed/internal/hub"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
)

// DefaultHeartbeat is how often an idle stream gets a comment, so that
// proxies and clients see the connection alive.
const DefaultHeartbeat = 15 * time.Second

// DefaultMaxStreams is how many streams one instance holds open at most.
// A stream costs about 7 KiB of resident memory once items flow (measured
// with rcmbench's fan-out: RSS growth over 10,000 streams, 6.3 KiB
// connected and 7.2 KiB after delivery; the connection is taken over from
// net/http, see liveStream), on a base of about 64 MiB. Counted at 12 KiB,
// 20,000 streams take about 300 MiB: inside 80% of the 512 MiB the
// deployment gives the feed, with room for the garbage collector. Past the
// cap a client is told to retry (503), and reaches another instance or
// this one once a stream closed, instead of the instance being killed for
// its memory with every stream it holds.
const DefaultMaxStreams = 20000

// errInvalidLastEventID answers a Last-Event-ID past the account's head:
// no stream of this API sent it, and resuming from it would hold back
// every item up to it.
var errInvalidLastEventID = httpx.ErrInvalidLastEventID

// Config is what a Handler needs.
type Config struct {
	Store *store.Store
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
	live liveStreams

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

type page struct {
	Items      []activity.Item `json:"items"`
	NextCursor string          `json:"nextCursor,omitempty"`
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	p, _ := principal.From(ctx)
	limit, err := httpx.PageLimit(r)
	if err != nil {
		return err
	}
	pg, err := h.cfg.Store.Page(ctx, p.AccountID, limit, r.URL.Query().Get("cursor"))
	if errors.Is(err, store.ErrInvalidCursor) {
		return httpx.ErrInvalidQuery.With("reason", "cursor is not a cursor this API returned")
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, page{Items: pg.Items, NextCursor: pg.NextCursor})
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
	from, err := store.ParsePosition(resume)
	if err != nil {
		return httpx.ErrInvalidQuery.With("reason", "Last-Event-ID is not a cursor this API returned")
	}
	if h.open.Add(1) > int64(h.cfg.MaxStreams) {
		h.open.Add(-1)
		h.rejected.Inc()
		return httpx.ErrUnavailable.With("reason", "this instance holds as many streams as it may")
	}
	if hijackable(w, r) {
		return h.takeOver(w, r, account, from)
	}
	defer h.open.Add(-1)

	// Subscribe before opening (which reads the head): see store.Open.
	sub := h.cfg.Hub.Subscribe(account)
	defer sub.Close()
	st, err := h.openStream(ctx, sub, account, from)
	var beyond *store.BeyondHeadError
	if errors.As(err, &beyond) {
		return errInvalidLastEventID.With("head", beyond.Head)
	}
	if err != nil {
		return err
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

	send := func(d store.Delivery) error {
		if err := s.item(d.Item, d.JSON); err != nil {
			return errClientGone
		}
		h.delivered(d)
		return nil
	}
	if err := st.Backlog(ctx, send); err != nil {
		return h.endStream(ctx, account, err)
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
		case <-sub.Ready():
			entries, dropped := sub.Take()
			for _, e := range entries {
				if err := st.Live(ctx, e.Item, e.JSON, send); err != nil {
					return h.endStream(ctx, account, err)
				}
			}
			if dropped != nil {
				h.cfg.Logger.Info("stream subscriber dropped", slog.String("request_id", httpx.RequestID(ctx)),
					slog.String("account_id", account), slog.Any("reason", dropped))
				return nil
			}
		}
	}
}

// takeOver serves a stream whose connection it takes over from net/http
// once it is open (see liveStream); the stream then outlives the handler.
// The stream counts among those open (h.open) until it closes.
func (h *Handler) takeOver(w http.ResponseWriter, r *http.Request, account string, from store.Position) error {
	ctx := r.Context()
	ls := &liveStream{h: h, account: account, reqID: httpx.RequestID(ctx), running: true}
	handed := false
	defer func() {
		if !handed {
			h.open.Add(-1)
		}
	}()
	// Subscribe before opening (which reads the head): see store.Open.
	ls.sub = h.cfg.Hub.SubscribeFunc(account, ls.wake)
	st, err := h.openStream(ctx, ls.sub, account, from)
	var beyond *store.BeyondHeadError
	if errors.As(err, &beyond) {
		ls.sub.Close()
		return errInvalidLastEventID.With("head", beyond.Head)
	}
	if err != nil {
		ls.sub.Close()
		return err
	}
	ls.st = st
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		ls.sub.Close()
		return fmt.Errorf("stream: take the connection over: %w", err)
	}
	handed = true
	// The server's deadlines suit requests, not a stream; each write sets
	// a deadline of its own. The reader buffered by net/http holds nothing
	// a stream needs: a client sends nothing after its request.
	_ = conn.SetDeadline(time.Time{})
	_ = brw
	ls.conn = conn
	ls.beat = time.AfterFunc(h.cfg.Heartbeat, ls.heartbeat)
	h.streams.Inc()
	h.adopt(ls)
	if err := ls.send(head(w.Header())); err != nil {
		ls.close()
		return nil
	}
	go ls.watch()

	var out []byte
	send := func(d store.Delivery) error {
		out = appendItem(out, d.Item, d.JSON)
		if len(out) >= 32<<10 {
			if err := ls.chunk(out); err != nil {
				return errClientGone
			}
			out = out[:0]
		}
		h.delivered(d)
		return nil
	}
	err = st.Backlog(ctx, send)
	if err == nil && len(out) > 0 && ls.chunk(out) != nil {
		err = errClientGone
	}
	if err != nil {
		h.logEnd(ls.reqID, account, err)
		if errors.Is(err, errClientGone) {
			ls.close()
		} else {
			ls.finish()
		}
		return nil
	}
	ls.handOver()
	return nil
}

// delivered counts an item written to a stream.
func (h *Handler) delivered(d store.Delivery) {
	if !d.Live {
		h.deliveries.WithLabelValues("history").Inc()
		return
	}
	h.deliveries.WithLabelValues("live").Inc()
	if at, err := events.ParseTime(d.Item.OccurredAt); err == nil {
		h.latency.Observe(h.cfg.Now().Sub(at).Seconds())
	}
}

// openStream opens account's stream from at for sub, subscribed already: at
// the head the hub knows for the account, reading nothing, or at the
// head read from the store, which the hub then knows for the next
// streams of the account.
func (h *Handler) openStream(ctx context.Context, sub *hub.Subscription, account string, at store.Position) (*store.Stream, error) {
	if head, known := sub.Head(); known {
		return h.cfg.Store.OpenAt(ctx, account, at, head)
	}
	st, err := h.cfg.Store.Open(ctx, account, at)
	if err == nil {
		sub.Learn(st.Head())
	}
	return st, err
}

// endStream logs why a stream that already started had to end. The
// response is under way, so there is no status left to answer with; the
// client reconnects with its Last-Event-ID.
func (h *Handler) endStream(ctx context.Context, account string, err error) error {
	if ctx.Err() == nil {
		h.logEnd(httpx.RequestID(ctx), account, err)
	}
	return nil
}

// logEnd logs why a stream ended, unless its client went.
func (h *Handler) logEnd(requestID, account string, err error) {
	if !errors.Is(err, errClientGone) {
		h.cfg.Logger.Warn("stream ended", slog.String("request_id", requestID),
			slog.String("account_id", account), slog.Any("err", err))
	}
}
