package main

import (
	"net/http"
	"testing"
	"time"
)

// TestRunStopsInOrder starts run as main does, with a stream open and
// records arriving, and stops it as SIGTERM does: the stream ends, run
// returns, and a second run serves every event exactly once.
func TestRunStopsInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	first := e.start(t, nil)
	s := e.openStream(t, first, "org_a", "", nil)
	evs := e.newEvents("org_a", 6)
	e.produceAndAwait(t, e.records(t, evs[:3]...)...)
	s.items(t, 3)
	e.produce(t, evs[3:]...)
	first.stop()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream was still open after run returned")
	}

	second := e.start(t, nil)
	eventually(t, 30*time.Second, "every event to be stored", func() bool {
		status, page, _ := e.list(t, second, "org_a", "?limit=50")
		return status == http.StatusOK && len(page.Items) == 6
	})
	_, page, _ := e.list(t, second, "org_a", "?limit=50")
	for i, it := range page.Items {
		if want := int64(6 - i); it.Seq != want || it.ID != evs[want-1].EventID {
			t.Fatalf("item %d is %d:%s, want %d:%s", i, it.Seq, it.ID, want, evs[want-1].EventID)
		}
	}
}
