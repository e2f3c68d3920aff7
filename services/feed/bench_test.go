package main

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
)

// BenchmarkLiveDelivery measures, one event at a time, the time from
// producing an event to the event topic until its item arrives on an SSE
// stream: storage, the activity topic and the hub in between. It reports
// the median and the 99th percentile.
func BenchmarkLiveDelivery(b *testing.B) {
	e := newEnv(b, 2)
	inst := e.start(b, nil)
	s := e.openStream(b, inst, "org_bench", "", nil)
	evs := make([]events.Event, 0, b.N)
	for i := range b.N {
		evs = append(evs, e.event("org_bench", i))
	}
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		e.produce(b, evs[i])
		if it := s.items(b, 1)[0]; it.ID != evs[i].EventID {
			b.Fatalf("got %s, want %s", it.ID, evs[i].EventID)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkHistoryPage measures GET /v1/activity pages of 50 items, read
// by _id from the head down.
func BenchmarkHistoryPage(b *testing.B) {
	e := newEnv(b, 1)
	inst := e.start(b, nil)
	e.produceAndAwait(b, e.records(b, e.newEvents("org_bench", 500)...)...)
	b.ResetTimer()
	for range b.N {
		if status, page, body := e.list(b, inst, "org_bench", "?limit=50&cursor=300"); status != http.StatusOK || len(page.Items) != 50 {
			b.Fatalf("got %d %s", status, body)
		}
	}
}
