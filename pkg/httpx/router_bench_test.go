package httpx

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// BenchmarkRouter is one request through the middleware every service
// runs, to a trivial handler, in process: what the middleware costs,
// with tracing off as obs.StartTracing leaves it without an OTLP endpoint
// (OpenTelemetry's no-op tracer provider, the W3C propagator installed).
func BenchmarkRouter(b *testing.B) {
	prop := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	b.Cleanup(func() { otel.SetTextMapPropagator(prop) })
	r := NewRouter(slog.New(slog.DiscardHandler), NewHTTPMetrics(prometheus.NewRegistry(), "bench"), 15*time.Second)
	r.Get("/things/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, tc := range []struct{ name, traceparent string }{
		{"no traceparent", ""},
		{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/things/42", nil)
			if tc.traceparent != "" {
				req.Header.Set("traceparent", tc.traceparent)
			}
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				r.ServeHTTP(w, req)
				if w.Code != http.StatusNoContent {
					b.Fatalf("got %d", w.Code)
				}
			}
		})
	}
}
