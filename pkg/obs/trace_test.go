package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func TestLogsCarryTraceID(t *testing.T) {
	var buf bytes.Buffer
	logger := NewLogger(&buf, "test", "info").With("k", "v")
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		Remote:  true,
	})
	logger.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "traced")
	logger.InfoContext(context.Background(), "untraced")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %q", len(lines), buf.String())
	}
	var traced, untraced map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &traced); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &untraced); err != nil {
		t.Fatal(err)
	}
	if traced["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" || traced["span_id"] != "00f067aa0ba902b7" {
		t.Errorf("got trace_id %v span_id %v, want the span's ids", traced["trace_id"], traced["span_id"])
	}
	if traced["k"] != "v" || traced["service"] != "test" {
		t.Errorf("got %v, want the logger's attributes kept", traced)
	}
	if _, ok := untraced["trace_id"]; ok {
		t.Errorf("got trace_id %v on a line logged without a span", untraced["trace_id"])
	}
}

// restoreGlobals puts back OpenTelemetry's global provider and propagator.
func restoreGlobals(t *testing.T) {
	t.Helper()
	prop := otel.GetTextMapPropagator()
	t.Cleanup(func() {
		if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
			otel.SetTracerProvider(noop.NewTracerProvider())
		}
		otel.SetTextMapPropagator(prop)
	})
}

func TestStartTracingExportsOverOTLP(t *testing.T) {
	restoreGlobals(t)
	// An OTLP receiver that keeps the bodies of trace exports. (The
	// gateway's module tidies with this package's tests, and does not
	// require the dev module and its receiver.)
	var mu sync.Mutex
	var exported [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "not a trace export", http.StatusBadRequest)
			return
		}
		mu.Lock()
		exported = append(exported, body)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL + "/"}
	ctx := context.Background()
	shutdown, err := StartTracing(ctx, "tested", func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(ctx, "exported span")
	if !span.IsRecording() {
		t.Fatal("got a span that does not record, want a recording one with export on")
	}
	span.End()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// A protobuf message holds its strings as they are.
	mu.Lock()
	defer mu.Unlock()
	if len(exported) != 1 || !bytes.Contains(exported[0], []byte("exported span")) || !bytes.Contains(exported[0], []byte("tested")) {
		t.Errorf("got %d exports %q, want one holding the span and its service name", len(exported), exported)
	}
}

func TestStartTracingOffStillPropagates(t *testing.T) {
	restoreGlobals(t)
	ctx := context.Background()
	for _, env := range []map[string]string{
		{},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"},
	} {
		shutdown, err := StartTracing(ctx, "tested", func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		in := otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier{"traceparent": tp})
		sctx, span := otel.Tracer("test").Start(in, "not recorded")
		if span.IsRecording() {
			t.Errorf("%v: got a recording span, want tracing off", env)
		}
		out := propagation.MapCarrier{}
		otel.GetTextMapPropagator().Inject(sctx, out)
		if out["traceparent"] != tp {
			t.Errorf("%v: got traceparent %q passed on, want %q", env, out["traceparent"], tp)
		}
		span.End()
		if err := shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStartTracingRejectsGRPC(t *testing.T) {
	restoreGlobals(t)
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
	if _, err := StartTracing(context.Background(), "tested", func(k string) string { return env[k] }); err == nil {
		t.Error("got no error, want the unsupported protocol named")
	}
}
