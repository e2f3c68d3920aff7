//go:build long

package relay_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/services/campaign/internal/relay"
)

// TestDrainAfterLongOutage measures the start after an outage larger than
// the relay's queue at its real size: RCM_LONG_EVENTS events (70,000 by
// default, more than the 65,536 the queue holds) waiting in the outbox.
// It prints the time from start to ready and to an empty outbox. On the
// embedded store (2 cores): 70,000 events, ready after 10.9 s (one read of
// the outboxes), outbox empty after 3 min 10 s (369 events/s, bound by the
// outbox removals).
//
//	go test -tags long -run TestDrainAfterLongOutage -v -timeout 30m ./internal/relay/
func TestDrainAfterLongOutage(t *testing.T) {
	n := 70_000
	if v, err := strconv.Atoi(os.Getenv("RCM_LONG_EVENTS")); err == nil && v > 0 {
		n = v
	}
	broker := newBroker(t, 6)
	s := newStore(t)
	began := time.Now()
	leave(t, s, "org_long", n)
	t.Logf("wrote %d events in %v", n, time.Since(began).Round(time.Millisecond))

	producer := newProducer(t, broker)
	rl := newRelay(relay.Config{Topic: topic}, producer, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	if err := rl.Sweep(ctx, 0); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(start)
	done := make(chan error, 1)
	go func() { done <- rl.Run(ctx, 10*time.Second) }()
	waitEmptyEvery(t, s, 20*time.Minute, 2*time.Second)
	empty := time.Since(start)
	t.Logf("%d events left: ready after %v, outbox empty after %v (%.0f events/s)", n, ready.Round(time.Millisecond), empty.Round(time.Millisecond), float64(n)/empty.Seconds())
	cancel()
	<-done
}
