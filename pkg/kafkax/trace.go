package kafkax

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// traceHooks are franz-go's kotel tracing hooks, with the global tracer
// provider and propagator: a produced record carries the trace context of
// the Produce context (or of its own Context) in a traceparent header, and
// a fetched record's Context holds a receive span continuing it.
func traceHooks(clientID string) []kgo.Hook {
	return kotel.NewKotel(kotel.WithTracer(kotel.NewTracer(kotel.ClientID(clientID)))).Hooks()
}

// processSpans starts a process span for each record of a batch, a child
// of the trace the record came with, and returns ctx carrying the first
// one's span for the handler: a batch is one piece of work (one write to
// the store), and it joins the trace of its first record; each other
// record's trace shows its own process span lasting the batch. end ends
// them all, with err as their status.
func processSpans(ctx context.Context, records []*kgo.Record) (context.Context, func(err error)) {
	tracer := otel.Tracer("github.com/rcm-platform/rcm/pkg/kafkax")
	spans := make([]trace.Span, len(records))
	var batchCtx context.Context
	for i, r := range records {
		parent := r.Context
		if parent == nil {
			parent = context.Background()
		}
		attrs := []attribute.KeyValue{
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", r.Topic),
			attribute.Int("messaging.destination.partition.id", int(r.Partition)),
			attribute.Int64("messaging.kafka.offset", r.Offset),
		}
		if i == 0 {
			attrs = append(attrs, attribute.Int("messaging.batch.message_count", len(records)))
		}
		var sctx context.Context
		sctx, spans[i] = tracer.Start(parent, r.Topic+" process", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
		if i == 0 {
			// The loop's context (its cancellation), with the span.
			batchCtx = trace.ContextWithSpan(ctx, trace.SpanFromContext(sctx))
		}
	}
	if batchCtx == nil {
		batchCtx = ctx
	}
	return batchCtx, func(err error) {
		for _, s := range spans {
			if err != nil {
				s.SetStatus(codes.Error, err.Error())
			}
			s.End()
		}
	}
}
