package httpx

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// recordSpans makes the global tracer provider record into memory for the
// test's duration. (The gateway's module tidies with this package's tests,
// and does not require the dev module.)
func recordSpans(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prop := otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() {
		_ = tp.Shutdown(t.Context())
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(prop)
	})
	return exp
}

func TestRouterTracesRequests(t *testing.T) {
	exp := recordSpans(t)
	r := NewRouter(slog.New(slog.DiscardHandler), NewHTTPMetrics(prometheus.NewRegistry(), "test"), time.Second)
	var inHandler trace.SpanContext
	r.Get("/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		inHandler = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusNoContent)
	})
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(r)
	defer srv.Close()

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/things/42", nil)
	req.Header.Set("traceparent", parent)
	req.Header.Set(HeaderRequestID, "req_tracetest01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp, err = http.Get(srv.URL + "/healthz"); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("got %d spans (%v), want one for /things/42 and none for /healthz", len(spans), spans)
	}
	s := spans[0]
	if s.Name != "GET /things/{id}" {
		t.Errorf("got span name %q, want the route pattern", s.Name)
	}
	if s.SpanKind != trace.SpanKindServer {
		t.Errorf("got kind %v, want server", s.SpanKind)
	}
	if got := s.SpanContext.TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("got trace id %s, want the caller's", got)
	}
	if got := s.Parent.SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("got parent span %s, want the caller's", got)
	}
	if inHandler.SpanID() != s.SpanContext.SpanID() {
		t.Errorf("got span %s in the handler's context, want the server span %s", inHandler.SpanID(), s.SpanContext.SpanID())
	}
	want := map[attribute.Key]string{"http.route": "/things/{id}", "rcm.request_id": "req_tracetest01"}
	for _, a := range s.Attributes {
		if v, ok := want[a.Key]; ok {
			if a.Value.AsString() != v {
				t.Errorf("got %s=%q, want %q", a.Key, a.Value.AsString(), v)
			}
			delete(want, a.Key)
		}
	}
	if len(want) > 0 {
		t.Errorf("span lacks attributes %v", want)
	}
}

// A router mounted under an http.ServeMux pattern keeps chi's route as the
// span name, not the mux's.
func TestRouterBehindServeMuxNamesSpanByRoute(t *testing.T) {
	exp := recordSpans(t)
	r := NewRouter(slog.New(slog.DiscardHandler), NewHTTPMetrics(prometheus.NewRegistry(), "test"), 0)
	r.Get("/stream/{id}", func(w http.ResponseWriter, r *http.Request) {})
	mux := http.NewServeMux()
	mux.Handle("/", r)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/stream/7")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "GET /stream/{id}" {
		t.Fatalf("got spans %v, want one named GET /stream/{id}", spans)
	}
}
