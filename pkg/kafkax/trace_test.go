package kafkax_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/spantest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestTraceGoesThroughARecord: a record produced within a span carries its
// trace context in a traceparent header (kotel), and ConsumeLoop hands the
// batch to its handler within a process span of that trace, so that the
// handler's work joins the trace of the request that produced the record.
func TestTraceGoesThroughARecord(t *testing.T) {
	exp := spantest.Record(t)
	tracer := otel.Tracer("test")

	topic := kafkatest.NewTopic(t, 1)
	conn := kafkax.Conn{Brokers: kafkatest.Brokers(t)}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	producer, err := kafkax.NewClient(conn, "trace-producer", prometheus.NewRegistry(), logger, kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	consumer, err := kafkax.NewClient(conn, "trace-consumer", prometheus.NewRegistry(), logger,
		kafkax.GroupOpts("trace-"+topic, topic, "", 6*time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(consumer.Close)

	ctx, request := tracer.Start(context.Background(), "request")
	rec := &kgo.Record{Value: []byte("traced")}
	if err := producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	request.End()
	traceID := request.SpanContext().TraceID()
	var header string
	for _, h := range rec.Headers {
		if h.Key == "traceparent" {
			header = string(h.Value)
		}
	}
	if !strings.Contains(header, traceID.String()) {
		t.Errorf("got traceparent %q on the record, want the request's trace %s", header, traceID)
	}

	var mu sync.Mutex
	var handled trace.SpanContext
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = kafkax.ConsumeLoop(lctx, consumer, 10, func(ctx context.Context, _ string, _ int32, rs []*kgo.Record) error {
			_, store := tracer.Start(ctx, "store")
			store.End()
			mu.Lock()
			handled = trace.SpanContextFromContext(ctx)
			mu.Unlock()
			return nil
		}, logger)
	}()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, 20*time.Second, "the record handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled.IsValid()
	})
	if handled.TraceID() != traceID {
		t.Errorf("got trace %s in the handler, want the request's %s", handled.TraceID(), traceID)
	}

	byName := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() == traceID {
			byName[s.Name] = s
		}
	}
	for _, name := range []string{topic + " publish", topic + " receive", topic + " process", "store"} {
		if _, ok := byName[name]; !ok {
			t.Errorf("no span %q in the request's trace; have %v", name, keys(byName))
		}
	}
	if p, s := byName[topic+" process"], byName["store"]; s.Parent.SpanID() != p.SpanContext.SpanID() {
		t.Errorf("got the handler's span under %s, want under the process span %s", s.Parent.SpanID(), p.SpanContext.SpanID())
	}
}

func keys(m map[string]tracetest.SpanStub) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
