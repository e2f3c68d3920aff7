package relay_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/spantest"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/relay"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestRecordContinuesTheRequestsTrace: an event written within a request's
// span is published, even by a later sweep, as a record whose traceparent
// continues that request's trace, through a publish span that is the
// request's child.
func TestRecordContinuesTheRequestsTrace(t *testing.T) {
	exp := spantest.Record(t)

	topic := "traced-events"
	broker := kafkatest.Restartable(t, kafkax.Topic{Name: topic, Partitions: 1})
	s := newStore(t)
	doc := campaign.Document{ID: "doc_traced", AccountID: "org_traced", Loan: &campaign.Loan{Status: "BEHIND"}, Version: 1}
	c, e, err := campaign.Start(campaign.StartInput{SMS: true, Tone: "t", Cadence: "c"}, doc, user, gen.New, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rctx, request := otel.Tracer("test").Start(context.Background(), "request")
	if _, _, err := s.Create(rctx, c, e); err != nil {
		t.Fatal(err)
	}
	request.End()
	want := request.SpanContext()

	producer, err := kafkax.NewClient(kafkax.Conn{Brokers: broker.Brokers()}, "traced-relay", prometheus.NewRegistry(), logger,
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	rl := newRelay(relay.Config{Topic: topic}, producer, s)
	ctx, cancel := context.WithCancel(context.Background())
	if err := rl.Sweep(ctx, 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rl.Run(ctx, 2*time.Second) }()
	defer func() { cancel(); <-done }()

	cl := broker.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	var traceparent string
	for traceparent == "" && pctx.Err() == nil {
		cl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == kafkarec.HeaderTraceparent {
					traceparent = string(h.Value)
				}
			}
			if traceparent == "" {
				t.Fatalf("record %s has no traceparent, want the request's trace", r.Headers)
			}
		})
	}
	if !strings.HasPrefix(traceparent, "00-"+want.TraceID().String()+"-") {
		t.Fatalf("got traceparent %q, want one of the request's trace %s", traceparent, want.TraceID())
	}
	// The publish span ends when the producer has the acknowledgement,
	// which may be after a consumer saw the record.
	var publish []tracetest.SpanStub
	for deadline := time.Now().Add(10 * time.Second); len(publish) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, sp := range exp.GetSpans() {
			if sp.Name == topic+" publish" {
				publish = append(publish, sp)
			}
		}
	}
	if len(publish) != 1 || publish[0].SpanContext.TraceID() != want.TraceID() || publish[0].Parent.SpanID() != want.SpanID() ||
		publish[0].SpanKind != trace.SpanKindProducer {
		t.Fatalf("got publish spans %+v, want one, a producer span child of the request %s", publish, want.SpanID())
	}
	if !strings.Contains(traceparent, publish[0].SpanContext.SpanID().String()) {
		t.Errorf("got traceparent %q, want the publish span %s as the consumers' parent", traceparent, publish[0].SpanContext.SpanID())
	}
}
