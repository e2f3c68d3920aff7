package mongox

import (
	"context"
	"net"
	"strconv"
	"sync"

	"go.mongodb.org/mongo-driver/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// commandTracer gives each command run within a recorded span a client
// span of its own, named "<command> <collection>" with the database
// semantic conventions' attributes; the command's text is not recorded
// (it holds borrowers' data). A command outside any recorded span (a
// sweep, a start-up step) gets none: alone it would be a trace of one
// span. (The contrib otelmongo instruments the v1 driver only.)
type commandTracer struct {
	tracer trace.Tracer
	mu     sync.Mutex
	spans  map[commandKey]trace.Span
}

type commandKey struct {
	conn string
	id   int64
}

func newCommandTracer(tp trace.TracerProvider) *commandTracer {
	return &commandTracer{
		tracer: tp.Tracer("github.com/rcm-platform/rcm/pkg/mongox"),
		spans:  map[commandKey]trace.Span{},
	}
}

func (c *commandTracer) started(ctx context.Context, e *event.CommandStartedEvent) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		semconv.DBSystemNameMongoDB,
		semconv.DBOperationName(e.CommandName),
		semconv.DBNamespace(e.DatabaseName),
	}
	name := e.CommandName
	// The first element of a command names its collection, when it has one.
	if v, err := e.Command.IndexErr(0); err == nil {
		if coll, ok := v.Value().StringValueOK(); ok && coll != "" {
			attrs = append(attrs, semconv.DBCollectionName(coll))
			name += " " + coll
		}
	}
	if host, port, err := net.SplitHostPort(e.ConnectionID); err == nil {
		attrs = append(attrs, semconv.ServerAddress(host))
		if p, err := strconv.Atoi(portOnly(port)); err == nil {
			attrs = append(attrs, semconv.ServerPort(p))
		}
	}
	_, span := c.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	c.mu.Lock()
	c.spans[commandKey{e.ConnectionID, e.RequestID}] = span
	c.mu.Unlock()
}

func (c *commandTracer) finished(e *event.CommandFinishedEvent, err error) {
	c.mu.Lock()
	key := commandKey{e.ConnectionID, e.RequestID}
	span, ok := c.spans[key]
	delete(c.spans, key)
	c.mu.Unlock()
	if !ok {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// portOnly drops what the driver appends to a connection id's port
// ("27017[-5]" is the fifth connection to port 27017).
func portOnly(s string) string {
	for i, r := range s {
		if r < '0' || r > '9' {
			return s[:i]
		}
	}
	return s
}
