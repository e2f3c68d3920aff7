package documents_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/services/campaign/internal/documents"
	"github.com/twmb/franz-go/pkg/kgo"
)

// applier records the updates it applies and fails while fail is set.
type applier struct {
	applied []string
	fail    error
}

func (a *applier) Apply(_ context.Context, u documents.Update) error {
	if a.fail != nil {
		return a.fail
	}
	a.applied = append(a.applied, u.ID)
	return nil
}

// parked records the offsets sent to the dead-letter topic.
type parked struct {
	offsets []int64
	reasons []error
}

func (p *parked) park(_ context.Context, r *kgo.Record, reason error) error {
	p.offsets, p.reasons = append(p.offsets, r.Offset), append(p.reasons, reason)
	return nil
}

func outcome(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rcm_documents_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == name {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no outcome %s", name)
	return 0
}

// TestConsumerHandle: updates and tombstones are applied in order; what
// cannot be parsed is parked with ErrMalformed once the rest is applied,
// once however often a failing batch is retried; each outcome is counted.
func TestConsumerHandle(t *testing.T) {
	t.Parallel()
	ap, dl, reg := &applier{}, &parked{}, prometheus.NewRegistry()
	c := documents.NewConsumer(documents.ConsumerConfig{Applier: ap, DeadLetter: dl.park,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, reg)
	doc := func(id string) []byte {
		return []byte(`{"id":"` + id + `","accountId":"org_a","loan":{"status":"BEHIND"},"version":1}`)
	}
	batch := []*kgo.Record{
		{Key: []byte("doc_1"), Value: doc("doc_1")},
		{Key: []byte("doc_2"), Value: []byte("not json")},
		{Key: []byte("doc_3"), Value: nil}, // a tombstone
		{Key: []byte("doc_4"), Value: doc("doc_other")},
		{Key: nil, Value: doc("doc_5")},
		{Key: []byte("doc_6"), Value: doc("doc_6")},
	}
	for i, r := range batch {
		r.Offset = int64(i)
	}
	ctx := context.Background()

	ap.fail = errors.New("store down")
	if err := c.Handle(ctx, "documents.v1", 0, batch); !errors.Is(err, ap.fail) {
		t.Fatalf("store down: got %v, want its error", err)
	}
	if len(dl.offsets) != 0 {
		t.Fatalf("store down: parked %v, want nothing yet", dl.offsets)
	}
	ap.fail = nil
	if err := c.Handle(ctx, "documents.v1", 0, batch); err != nil {
		t.Fatal(err)
	}
	if want := []string{"doc_1", "doc_3", "doc_6"}; !slices.Equal(ap.applied, want) {
		t.Fatalf("applied %v, want %v", ap.applied, want)
	}
	if want := []int64{1, 3, 4}; !slices.Equal(dl.offsets, want) {
		t.Fatalf("parked offsets %v, want %v, each once", dl.offsets, want)
	}
	for i, r := range dl.reasons {
		if !errors.Is(r, events.ErrMalformed) {
			t.Errorf("offset %d: reason %v, want ErrMalformed", dl.offsets[i], r)
		}
	}
	for name, want := range map[string]float64{"applied": 2, "tombstone": 1, "malformed": 3} {
		if got := outcome(t, reg, name); got != want {
			t.Errorf("outcome %s counted %v, want %v", name, got, want)
		}
	}
}
