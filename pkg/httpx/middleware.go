package httpx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// HeaderRequestID carries the request id on every request and response.
const HeaderRequestID = "X-Request-Id"

type requestIDKey struct{}

// RequestID returns the request id of ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// WithRequestID returns ctx carrying id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// A request id we accept from a caller: short, and nothing that could forge
// a log line or a header.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{8,128}$`)

// NewRequestID returns a fresh random request id.
func NewRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

// RequestIDs gives every request an id: the caller's X-Request-Id when it is
// well-formed, else a fresh one. It is set on the response before anything
// else runs, so every response carries it.
func RequestIDs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderRequestID)
		if !validRequestID.MatchString(id) {
			id = NewRequestID()
		}
		w.Header().Set(HeaderRequestID, id)
		next.ServeHTTP(w, r.WithContext(WithRequestID(r.Context(), id)))
	})
}

// Recover turns a panic into a logged 500.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					logger.ErrorContext(r.Context(), "panic",
						slog.String("request_id", RequestID(r.Context())),
						slog.String("panic", fmt.Sprint(v)), slog.String("stack", string(debug.Stack())))
					WriteError(w, r, logger, ErrInternal)
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// LimitBody answers 413 when the declared body is over max bytes and caps
// what a handler can read to max; DecodeJSON turns a read past it into 413.
func LimitBody(max int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > max {
				WriteError(w, r, slog.Default(), ErrBodyTooLarge)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, max)
			next.ServeHTTP(w, r)
		})
	}
}

// IsBodyTooLarge reports whether err came from reading past LimitBody's cap.
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// statusWriter records the status and size a handler wrote. It passes
// Flush through so that streamed responses (SSE) stay unbuffered.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// HTTPMetrics are the request count and duration of one service, labelled by
// chi route pattern (never the raw path), method and status code.
type HTTPMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

// NewHTTPMetrics registers the HTTP metrics of service on reg.
func NewHTTPMetrics(reg prometheus.Registerer, service string) *HTTPMetrics {
	labels := prometheus.Labels{"service": service}
	m := &HTTPMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rcm_http_requests_total", Help: "HTTP requests served, by route pattern, method and status code.",
			ConstLabels: labels,
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rcm_http_request_duration_seconds", Help: "HTTP request duration until the handler returned, by route pattern, method and status code.",
			ConstLabels: labels,
			Buckets:     []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "code"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rcm_http_requests_in_flight", Help: "HTTP requests being served.", ConstLabels: labels,
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.inflight)
	return m
}

// quietRoutes are polled by probes and scrapers; their access log is
// debug-level so that it does not drown the requests that matter.
var quietRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// Observe is middleware that logs every request, records it in m and
// names its trace span. The
// route label is chi's pattern once routing is done ("unmatched" when no
// route matched), so a path full of ids never becomes a label value.
func (m *HTTPMetrics) Observe(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := &statusWriter{ResponseWriter: w}
			m.inflight.Inc()
			defer func() {
				m.inflight.Dec()
				route := "unmatched"
				if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
					route = rc.RoutePattern()
				}
				status := sw.status
				if status == 0 {
					status = http.StatusOK
				}
				code := strconv.Itoa(status)
				elapsed := time.Since(start)
				m.requests.WithLabelValues(route, r.Method, code).Inc()
				m.duration.WithLabelValues(route, r.Method, code).Observe(elapsed.Seconds())
				nameSpan(r, route, RequestID(r.Context()))
				level := slog.LevelInfo
				if quietRoutes[route] {
					level = slog.LevelDebug
				}
				logger.LogAttrs(r.Context(), level, "http request",
					slog.String("request_id", RequestID(r.Context())),
					slog.String("method", r.Method),
					slog.String("route", route),
					slog.Int("status", status),
					slog.Int64("bytes", sw.bytes),
					slog.Duration("duration", elapsed),
				)
			}()
			next.ServeHTTP(sw, r)
		})
	}
}
