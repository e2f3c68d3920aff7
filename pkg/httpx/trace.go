package httpx

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Trace is middleware that gives every request a server span, a child of
// the caller's traceparent when there is one (OpenTelemetry's otelhttp).
// Probes and scrapes get none. The span is named by the route once
// routing is done (see Observe).
//
// With tracing off (no SDK tracer provider installed, see
// obs.StartTracing) it only takes the caller's trace context into the
// request's context, so that it still goes on to the calls and records
// the request makes and to its logs: otelhttp's wrapping of every request
// would cost more than the rest of the middleware for spans nobody
// records.
func Trace(next http.Handler) http.Handler {
	traced := otelhttp.NewHandler(next, "http.server",
		otelhttp.WithFilter(func(r *http.Request) bool { return !quietRoutes[r.URL.Path] }),
		otelhttp.WithSpanNameFormatter(spanName))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tracing() {
			traced.ServeHTTP(w, r)
			return
		}
		if ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header)); ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// tracing reports whether spans are recorded: an SDK tracer provider is
// the global one.
func tracing() bool {
	_, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	return ok
}

// spanName is the method and, once chi has routed, the route pattern.
// otelhttp names the span again at the end when a http.ServeMux in front
// matched a pattern; this keeps chi's, the more precise one.
func spanName(_ string, r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		return r.Method + " " + rc.RoutePattern()
	}
	return r.Method
}

// nameSpan names the request's span by its route pattern, never by the
// raw path, and adds the request id.
func nameSpan(r *http.Request, route, requestID string) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	span.SetName(r.Method + " " + route)
	span.SetAttributes(attribute.String("http.route", route), attribute.String("rcm.request_id", requestID))
}

// Transport is a client transport that gives every call a client span
// (otelhttp) and sends its trace context. With tracing off it is base:
// the trace context that came in goes on anyway when the caller injected
// it into the request's headers.
func Transport(base http.RoundTripper) http.RoundTripper {
	return &transport{base: base, traced: otelhttp.NewTransport(base)}
}

type transport struct {
	base, traced http.RoundTripper
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if tracing() {
		return t.traced.RoundTrip(r)
	}
	return t.base.RoundTrip(r)
}

// CloseIdleConnections closes base's, as http.Client.CloseIdleConnections
// expects of a transport.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
