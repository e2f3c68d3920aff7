package upstream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/principal"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestCallsContinueTheRequestsTrace: an internal call made for a request
// carries a traceparent of the request's trace whose parent is the call's
// client span, itself the request's child.
func TestCallsContinueTheRequestsTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	got := make(chan string, 1)
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
	}))
	defer internal.Close()
	signer, err := principal.NewSigner(strings.Repeat("s", 32), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(internal.URL, signer, nil)
	if err != nil {
		t.Fatal(err)
	}

	ctx, request := tp.Tracer("test").Start(context.Background(), "request")
	in := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v1/things", nil)
	out, err := svc.Request(in, principal.Principal{AccountID: "org_1", UserID: "user_1"}, "/v1/things", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svc.Do(out)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	request.End()

	tp2 := <-got
	var client tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.SpanKind == trace.SpanKindClient {
			client = s
		}
	}
	if client.Parent.SpanID() != request.SpanContext().SpanID() {
		t.Fatalf("got client span %+v, want one child of the request's span", client)
	}
	want := "00-" + request.SpanContext().TraceID().String() + "-" + client.SpanContext.SpanID().String() + "-01"
	if tp2 != want {
		t.Errorf("got traceparent %q, want %q", tp2, want)
	}
}
