package obs

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// TraceHandler adds trace_id and span_id to every record logged with a
// context that carries a span (a recorded one, or one that only came in
// with a traceparent), so that a log line leads to its trace.
type TraceHandler struct{ slog.Handler }

// NewTraceHandler wraps h.
func NewTraceHandler(h slog.Handler) *TraceHandler { return &TraceHandler{h} }

// Handle adds the span's ids, then hands the record on.
func (h *TraceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs keeps the wrapper around the derived handler.
func (h *TraceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &TraceHandler{h.Handler.WithAttrs(as)}
}

// WithGroup keeps the wrapper around the derived handler.
func (h *TraceHandler) WithGroup(name string) slog.Handler {
	return &TraceHandler{h.Handler.WithGroup(name)}
}
