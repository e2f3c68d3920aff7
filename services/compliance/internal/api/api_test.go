package api

import (
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
)

// TestEventTypeFilter: every event type of the topic is a filter, and
// nothing else is.
func TestEventTypeFilter(t *testing.T) {
	t.Parallel()
	for _, typ := range append(events.Types(), "") {
		q, err := parseQuery(httptest.NewRequest("GET", "/v1/compliance-log?eventType="+typ, nil))
		if err != nil || q.EventType != typ {
			t.Errorf("eventType=%s: got %+v, %v; want the filter", typ, q, err)
		}
	}
	for _, typ := range []string{"deleted", "CONTACT_BLOCKED", "contact"} {
		if _, err := parseQuery(httptest.NewRequest("GET", "/v1/compliance-log?eventType="+typ, nil)); !errors.Is(err, httpx.ErrInvalidQuery) {
			t.Errorf("eventType=%s: got %v, want Invalid query parameter.", typ, err)
		}
	}
}
