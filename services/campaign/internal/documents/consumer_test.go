package documents_test

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRetriedBatchParksOnce: a batch that fails on the store is offered
// again whole; its malformed record is parked once, not once per attempt,
// and the rest is applied once the store answers.
func TestRetriedBatchParksOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	batch := []*kgo.Record{record("doc_bad", `not json`), version(1, "BEHIND")}
	down, cancel := context.WithCancel(context.Background())
	cancel() // the store cannot be reached
	if err := f.consumer.Handle(down, "documents.v1", 0, batch); err == nil {
		t.Fatal("store unreachable: got nil, want an error")
	}
	f.handle(t, batch...)
	f.handle(t, batch...) // and once more, as after a lost commit
	if len(f.dlq.keys) != 1 || f.dlq.keys[0] != "doc_bad" {
		t.Fatalf("dead-lettered %v over three attempts, want doc_bad once", f.dlq.keys)
	}
	if _, err := f.store.AnyDocument(context.Background(), "doc_x"); err != nil {
		t.Fatalf("the valid update: %v, want it applied", err)
	}
	for name, want := range map[string]float64{"applied": 2, "malformed": 1} {
		if got := f.outcome(t, name); got != want {
			t.Errorf("outcome %s counted %v, want %v", name, got, want)
		}
	}
}

// outcome returns the count of rcm_documents_messages_total{outcome}.
func (f *fixture) outcome(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
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
