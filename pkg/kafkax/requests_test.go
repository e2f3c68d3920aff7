package kafkax_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// requests returns the rcm_kafka_requests_total of reg by request type.
func requests(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "rcm_kafka_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "request" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// TestRequestsAreCountedByType: each record produced and awaited on its
// own is one Produce request, and the client's other requests (metadata
// first) are counted under their own names.
func TestRequestsAreCountedByType(t *testing.T) {
	t.Parallel()
	topic := kafkatest.NewTopic(t, 1)
	reg := prometheus.NewRegistry()
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: kafkatest.Brokers(t)}, "counted", reg,
		slog.New(slog.NewTextHandler(io.Discard, nil)), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 5
	for range n {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	got := requests(t, reg)
	if got["Produce"] != n {
		t.Fatalf("Produce requests: got %v, want %d (all: %v)", got["Produce"], n, got)
	}
	if got["Metadata"] < 1 {
		t.Fatalf("Metadata requests: got %v, want at least 1 (all: %v)", got["Metadata"], got)
	}
}
