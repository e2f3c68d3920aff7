package e2e

import (
	"fmt"

	"bufio"
	"context"
	"encoding/json"
	"github.com/rcm-platform/rcm/dev/stack"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// activityItem is an item of the activity feed.
type activityItem struct {
	ID         string `json:"id"`
	Cursor     string `json:"cursor"`
	Type       string `json:"type"`
	DocumentID string `json:"documentId"`
	CampaignID string `json:"campaignId"`
	Summary    string `json:"summary"`
	OccurredAt string `json:"occurredAt"`
}

// subscriber follows an account's SSE stream through the gateway the way
// a browser's EventSource does: when the stream ends it reconnects with
// Last-Event-ID.
type subscriber struct {
	t      *testing.T
	tok    string
	cancel context.CancelFunc
	done   chan struct{}

	mu          sync.Mutex
	items       []activityItem
	ids         []string // the SSE id: of each item
	connects    int
	heartbeats  int
	connected   chan struct{}
	connectOnce sync.Once
}

func subscribe(t *testing.T, tok string) *subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscriber{t: t, tok: tok, cancel: cancel, done: make(chan struct{}), connected: make(chan struct{})}
	go s.run(ctx)
	t.Cleanup(s.close)
	select {
	case <-s.connected:
	case <-time.After(30 * time.Second):
		t.Fatal("the SSE stream did not open")
	}
	return s
}

func (s *subscriber) close() {
	s.cancel()
	<-s.done
}

func (s *subscriber) run(ctx context.Context) {
	defer close(s.done)
	last := ""
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", stk.GatewayURL()+"/v1/activity/stream", nil)
		req.Header.Set("Authorization", "Bearer "+s.tok)
		req.Header.Set("Accept", "text/event-stream")
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			if resp != nil {
				resp.Body.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond): // EventSource's retry
			}
			continue
		}
		s.mu.Lock()
		s.connects++
		s.mu.Unlock()
		s.connectOnce.Do(func() { close(s.connected) })
		last = s.read(resp, last)
		resp.Body.Close()
	}
}

// read parses events until the stream ends and returns the last id seen.
func (s *subscriber) read(resp *http.Response, last string) string {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				var it activityItem
				if err := json.Unmarshal([]byte(data), &it); err != nil {
					s.t.Errorf("SSE data %q: %v", data, err)
				}
				s.mu.Lock()
				s.items = append(s.items, it)
				s.ids = append(s.ids, id)
				s.mu.Unlock()
				last = id
			}
			id, data = "", ""
		case strings.HasPrefix(line, ":"):
			s.mu.Lock()
			s.heartbeats++
			s.mu.Unlock()
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
	return last
}

func (s *subscriber) received() []activityItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]activityItem(nil), s.items...)
}

// waitItems waits until the subscriber holds n items.
func (s *subscriber) waitItems(t *testing.T, n int) []activityItem {
	t.Helper()
	eventually(t, 90*time.Second, "SSE items", func() bool { return len(s.received()) >= n })
	return s.received()
}

// activity reads the account's whole activity history, newest first.
func activity(t *testing.T, tok string) []activityItem {
	t.Helper()
	var out []activityItem
	path := "/v1/activity?limit=4"
	for i := 0; i < 200; i++ {
		r := call(t, "GET", path, tok, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		var page struct {
			Items      []activityItem `json:"items"`
			NextCursor string         `json:"nextCursor"`
		}
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Items...)
		if page.NextCursor == "" {
			return out
		}
		path = "/v1/activity?limit=4&cursor=" + page.NextCursor
	}
	t.Fatal("too many pages")
	return nil
}

// metricValue reads one sample of a service's /metrics ("" labels = the
// first sample of that name).
func metricValue(t *testing.T, service, name string) float64 {
	t.Helper()
	resp, err := http.Get(stk.URL(service) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				return v
			}
		}
	}
	t.Fatalf("%s has no %s", service, name)
	return 0
}

// TestStreamEndsUpstreamWhenTheClientGoes: the gateway relays the stream
// without buffering, and closing the client's connection closes the
// feed's subscription behind it. Not parallel: it counts the feed's
// subscribers.
func TestStreamEndsUpstreamWhenTheClientGoes(t *testing.T) {
	acct := newAccount(t, "org")
	tok := token(t, acct)
	s := subscribe(t, tok)
	eventually(t, 10*time.Second, "the feed to count the subscriber", func() bool {
		return metricValue(t, stack.Feed, "rcm_feed_subscribers") >= 1
	})
	// An item reaches the subscriber through the gateway at once.
	putDoc(t, "doc_sse_"+acct, acct, "BEHIND", 1)
	startCampaign(t, tok, "doc_sse_"+acct, startBody())
	if got := s.waitItems(t, 1); got[0].Type != "campaign_started" {
		t.Fatalf("got %+v", got)
	}
	s.close()
	eventually(t, 10*time.Second, "the feed to drop the subscription", func() bool {
		return metricValue(t, stack.Feed, "rcm_feed_subscribers") == 0
	})
}
