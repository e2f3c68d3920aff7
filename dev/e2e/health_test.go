package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
)

func status(url string) int {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestReadinessFollowsDependencies stops the broker and then the store:
// every service that uses them turns not-ready (and stays alive), and
// turns ready again by itself when they return. It takes shared servers
// away, so it does not run in parallel.
func TestReadinessFollowsDependencies(t *testing.T) {
	users := []string{stack.Campaign, stack.Compliance, stack.Feed}
	wait := func(what string, want int) {
		t.Helper()
		for _, s := range users {
			eventually(t, 30*time.Second, s+" /readyz "+what, func() bool { return status(stk.URL(s)+"/readyz") == want })
			if got := status(stk.URL(s) + "/healthz"); got != http.StatusOK {
				t.Fatalf("%s /healthz %s: got %d, want 200 (alive)", s, what, got)
			}
		}
	}
	wait("at first", http.StatusOK)

	stk.StopKafka()
	wait("with the broker down", http.StatusServiceUnavailable)
	if err := stk.StartKafka(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait("once the broker is back", http.StatusOK)

	stk.StopMongo()
	wait("with the store down", http.StatusServiceUnavailable)
	if err := stk.StartMongo(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait("once the store is back", http.StatusOK)
	if got := status(stk.GatewayURL() + "/readyz"); got != http.StatusOK {
		t.Fatalf("gateway /readyz: got %d, want 200", got)
	}
}
