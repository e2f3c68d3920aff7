// Package obs sets up what every service needs to be observed: the JSON
// logger, the Prometheus registry with the Go and process collectors, and
// the /healthz, /readyz and /metrics handlers, and tracing (StartTracing).
package obs

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewLogger returns a JSON logger writing to w at level ("debug", "info",
// "warn", "error"; default info), tagged with the service name. A record
// logged with a context that carries a span gets its trace_id and span_id.
func NewLogger(w io.Writer, service, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(NewTraceHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))).With(slog.String("service", service))
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// MetricsHandler serves reg in the Prometheus exposition format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Check reports whether one dependency answers.
type Check func(ctx context.Context) error

// Health serves liveness and readiness. Liveness says only that the process
// serves HTTP; readiness runs every named check.
type Health struct {
	mu     sync.RWMutex
	checks map[string]Check
}

// NewHealth returns a Health with no checks.
func NewHealth() *Health { return &Health{checks: map[string]Check{}} }

// Add registers a readiness check.
func (h *Health) Add(name string, c Check) {
	h.mu.Lock()
	h.checks[name] = c
	h.mu.Unlock()
}

// Live answers 200 while the process serves requests.
func (h *Health) Live(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

// Ready answers 200 when every check passes within two seconds, else 503
// naming the failing ones.
func (h *Health) Ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	h.mu.RLock()
	checks := make(map[string]Check, len(h.checks))
	for k, v := range h.checks {
		checks[k] = v
	}
	h.mu.RUnlock()

	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(checks))
	for name, c := range checks {
		go func() { results <- result{name, c(ctx)} }()
	}
	failed := map[string]string{}
	for range checks {
		res := <-results
		if res.err != nil {
			failed[res.name] = res.err.Error()
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if len(failed) > 0 {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(mustJSON(map[string]any{"status": "unavailable", "failing": failed}))
		return
	}
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}

// Routes are the operational endpoints every service serves.
type Routes interface {
	Get(pattern string, h http.HandlerFunc)
	Handle(pattern string, h http.Handler)
}

// Mount serves /healthz, /readyz and /metrics on r.
func Mount(r Routes, h *Health, reg *prometheus.Registry) {
	r.Get("/healthz", h.Live)
	r.Get("/readyz", h.Ready)
	r.Handle("/metrics", MetricsHandler(reg))
}
