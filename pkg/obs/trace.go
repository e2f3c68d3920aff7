package obs

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// StartTracing sets up the process's OpenTelemetry tracing from the
// standard variables, read through getenv:
//
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or
//     OTEL_EXPORTER_OTLP_ENDPOINT (a base URL: /v1/traces is appended) turn
//     export on, over OTLP/HTTP with protobuf; OTEL_EXPORTER_OTLP_PROTOCOL,
//     when set, must say http/protobuf.
//   - OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off.
//   - OTEL_SERVICE_NAME overrides serviceName.
//
// The exporter's other settings (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
// _COMPRESSION, certificates), the sampler (OTEL_TRACES_SAMPLER, default
// parent-based always-on), OTEL_RESOURCE_ATTRIBUTES and the batch
// processor's OTEL_BSP_* are read by the SDK from the process environment.
//
// The W3C trace context propagator is installed in every case, so that a
// traceparent that comes in goes on with the work it started, to HTTP
// calls and Kafka records, and logs carry its trace id. With export off
// the tracer provider stays OpenTelemetry's no-op one: spans are not
// recorded, and cost little more than carrying the context.
//
// shutdown flushes the spans not yet exported; call it last.
func StartTracing(ctx context.Context, serviceName string, getenv func(string) string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	noop := func(context.Context) error { return nil }
	endpoint := tracesEndpoint(getenv)
	if endpoint == "" || strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(getenv("OTEL_TRACES_EXPORTER"), "none") {
		return noop, nil
	}
	if p := tracesProtocol(getenv); p != "" && p != "http/protobuf" {
		return noop, fmt.Errorf("tracing: OTLP protocol %q: only http/protobuf is supported", p)
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return noop, fmt.Errorf("tracing: OTLP exporter for %s: %w", endpoint, err)
	}
	if name := getenv("OTEL_SERVICE_NAME"); name != "" {
		serviceName = name
	}
	// The resource of the environment first, so that the service name
	// given here wins over a service.name in OTEL_RESOURCE_ATTRIBUTES only
	// when OTEL_SERVICE_NAME is not set.
	res, err := resource.Merge(resource.Environment(), resource.NewSchemaless(semconv.ServiceName(serviceName)))
	if err != nil {
		return noop, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// tracesEndpoint is the URL spans are exported to, or "" when none is set.
func tracesEndpoint(getenv func(string) string) string {
	if u := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); u != "" {
		return u
	}
	if u := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); u != "" {
		return strings.TrimRight(u, "/") + "/v1/traces"
	}
	return ""
}

func tracesProtocol(getenv func(string) string) string {
	if p := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"); p != "" {
		return p
	}
	return getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
}
