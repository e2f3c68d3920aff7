// Package spantest helps tests look at traces: Record makes the process's
// OpenTelemetry tracer provider record into memory, and Receiver is an
// OTLP/HTTP collector that built binaries export to.
package spantest

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Record installs, for the test's duration, a global tracer provider that
// records every span into the returned exporter as it ends, and the W3C
// trace-context propagator, as obs.StartTracing does.
func Record(t testing.TB) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prop := otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(prop)
	})
	return exp
}

// Span is what a Receiver keeps of an exported span.
type Span struct {
	Service                   string // the resource's service.name
	Name                      string
	TraceID, SpanID, ParentID string // hex; ParentID "" for a root
	Kind                      tracepb.Span_SpanKind
	Attributes                map[string]string // the string-valued ones
}

// Receiver is an OTLP/HTTP trace collector: serve it and point
// OTEL_EXPORTER_OTLP_ENDPOINT at it.
type Receiver struct {
	mu    sync.Mutex
	spans []Span
}

// ServeHTTP takes one export request (POST /v1/traces, protobuf).
func (o *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				attrs := map[string]string{}
				for _, a := range s.Attributes {
					attrs[a.Key] = a.GetValue().GetStringValue()
				}
				o.spans = append(o.spans, Span{Service: service, Name: s.Name, Kind: s.Kind, Attributes: attrs,
					TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId), ParentID: hex.EncodeToString(s.ParentSpanId)})
			}
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Spans returns the spans received so far that keep.
func (o *Receiver) Spans(keep func(Span) bool) []Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []Span
	for _, s := range o.spans {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}
