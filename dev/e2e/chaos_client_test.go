package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// chaosAPI talks to one stack's gateway the way a client program does:
// its own connection pool, a whole-request timeout, no assumption that
// the server is up.
type chaosAPI struct {
	base string
	hc   *http.Client
}

type chaosAnswer struct {
	status int
	header http.Header
	body   []byte
}

// errorMessage is the "error" of a JSON error body, "" if none.
func (a chaosAnswer) errorMessage() string {
	var b struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(a.body, &b)
	return b.Error
}

func (c *chaosAPI) do(ctx context.Context, method, path, tok string, body []byte, hdr ...string) (chaosAnswer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return chaosAnswer{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return chaosAnswer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return chaosAnswer{}, err
	}
	return chaosAnswer{status: resp.StatusCode, header: resp.Header, body: raw}, nil
}

// get reads path into v, retrying failures until within passes: once the
// faults stopped, a read that keeps failing is a finding, not noise.
func (c *chaosAPI) get(t *testing.T, tok, path string, within time.Duration, v any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		a, err := c.do(ctx, http.MethodGet, path, tok, nil)
		cancel()
		if err == nil && a.status == http.StatusOK {
			if err := json.Unmarshal(a.body, v); err != nil {
				t.Fatalf("GET %s: %v in %s", path, err, a.body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: still failing after %s: %d %s %v", path, within, a.status, a.body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logAll reads an account's whole compliance log, oldest first.
func (c *chaosAPI) logAll(t *testing.T, tok string) []auditlog.Entry {
	t.Helper()
	var out []auditlog.Entry
	cursor := ""
	for {
		var page struct {
			Entries    []auditlog.Entry `json:"entries"`
			NextCursor string           `json:"nextCursor"`
		}
		path := "/v1/compliance-log?order=asc&limit=200"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		c.get(t, tok, path, time.Minute, &page)
		out = append(out, page.Entries...)
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

// activityAll reads an account's whole activity history.
func (c *chaosAPI) activityAll(t *testing.T, tok string) []activityItem {
	t.Helper()
	var out []activityItem
	cursor := ""
	for {
		var page struct {
			Items      []activityItem `json:"items"`
			NextCursor string         `json:"nextCursor"`
		}
		path := "/v1/activity?limit=200"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		c.get(t, tok, path, time.Minute, &page)
		out = append(out, page.Items...)
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

// campaignsAll lists every campaign of a document.
func (c *chaosAPI) campaignsAll(t *testing.T, tok, doc string) []events.CampaignRecord {
	t.Helper()
	var out []events.CampaignRecord
	cursor := ""
	for {
		var page struct {
			Campaigns  []events.CampaignRecord `json:"campaigns"`
			NextCursor string                  `json:"nextCursor"`
		}
		path := "/v1/documents/" + doc + "/rcm?limit=200"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		c.get(t, tok, path, time.Minute, &page)
		out = append(out, page.Campaigns...)
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

func (c *chaosAPI) verify(t *testing.T, tok string) verifyAnswer {
	t.Helper()
	var v verifyAnswer
	c.get(t, tok, "/v1/compliance-log/verify", time.Minute, &v)
	return v
}

// chaosStream follows an account's SSE stream like a browser's
// EventSource: whenever the stream ends (the gateway or the feed died, a
// broker outage) it reconnects with the Last-Event-ID it last saw.
type chaosStream struct {
	api    *chaosAPI
	tok    string
	cancel context.CancelFunc
	done   chan struct{}
	open   chan struct{}

	mu       sync.Mutex
	seen     map[string]int // item id -> times received
	connects int
	bad      []string // what could not be parsed
}

func chaosSubscribe(t *testing.T, api *chaosAPI, tok string) *chaosStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &chaosStream{api: api, tok: tok, cancel: cancel, done: make(chan struct{}), open: make(chan struct{}), seen: map[string]int{}}
	go s.run(ctx)
	t.Cleanup(s.close)
	select {
	case <-s.open:
	case <-time.After(30 * time.Second):
		t.Fatal("the SSE stream did not open")
	}
	return s
}

func (s *chaosStream) close() {
	s.cancel()
	<-s.done
}

func (s *chaosStream) run(ctx context.Context) {
	defer close(s.done)
	// Streams have no whole-request timeout.
	hc := &http.Client{Transport: s.api.hc.Transport}
	var once sync.Once
	last := ""
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.api.base+"/v1/activity/stream", nil)
		req.Header.Set("Authorization", "Bearer "+s.tok)
		req.Header.Set("Accept", "text/event-stream")
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := hc.Do(req)
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
		once.Do(func() { close(s.open) })
		last = s.read(resp.Body, last)
		resp.Body.Close()
	}
}

// read takes events until the stream ends and returns the last id seen.
func (s *chaosStream) read(body io.Reader, last string) string {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				var it activityItem
				s.mu.Lock()
				if err := json.Unmarshal([]byte(data), &it); err != nil || it.ID == "" {
					s.bad = append(s.bad, data)
				} else {
					s.seen[it.ID]++
				}
				s.mu.Unlock()
				if id != "" {
					last = id
				}
			}
			id, data = "", ""
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
	return last
}

// received returns how often each item id arrived.
func (s *chaosStream) received() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.seen))
	for k, v := range s.seen {
		out[k] = v
	}
	return out
}

// chaosLag is each group's lag on the topics it consumes: the records
// between its committed offsets and the ends of the partitions. A
// partition whose lag is unknown (no commit, an error) counts as lagging
// by its end offset.
func chaosLag(ctx context.Context, broker string, topics map[string]string) (map[string]int64, error) {
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{broker}}, "chaos-lag", prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, events.Topic, "documents.v1")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for group, topic := range topics {
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return nil, fmt.Errorf("offsets of %s: %w", group, err)
		}
		var lag int64
		var ferr error
		ends.Each(func(e kadm.ListedOffset) {
			if e.Topic != topic {
				return
			}
			if e.Err != nil {
				ferr = e.Err
				return
			}
			committed := int64(0)
			if o, ok := offs.Lookup(e.Topic, e.Partition); ok && o.Err == nil && o.At >= 0 {
				committed = o.At
			}
			lag += max(0, e.Offset-committed)
		})
		if ferr != nil {
			return nil, ferr
		}
		out[group] = lag
	}
	return out, nil
}

// chaosMetric reads the first sample of a metric from a service.
func chaosMetric(baseURL, name string) (float64, error) {
	resp, err := http.Get(baseURL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				return v, nil
			}
		}
	}
	return 0, fmt.Errorf("no %s", name)
}

// chaosTopic reads the whole event topic and returns, by the key the
// workload wrote into an event's notes, the ids of the events that carry
// it: where a loss happened (an accepted request whose event the topic
// never held, or one the topic holds and the log does not) says whose
// bug it is.
func chaosTopic(ctx context.Context, broker string) (map[string]map[string]bool, error) {
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{broker}}, "chaos-topic", prometheus.NewRegistry(), slog.New(slog.DiscardHandler),
		kgo.ConsumeTopics(events.Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(250*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, events.Topic)
	if err != nil {
		return nil, err
	}
	left := map[int32]int64{} // partition -> end offset not yet reached
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	byKey := map[string]map[string]bool{}
	for len(left) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read %s: %w with partitions %v left", events.Topic, ctx.Err(), left)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if e, err := kafkarec.Decode(r); err == nil {
				notes := e.Notes
				if e.Campaign != nil && e.EventType == events.TypeCampaignStarted {
					notes = e.Campaign.Notes
				}
				if k := chaosNotesKey(notes); k != "" {
					if byKey[k] == nil {
						byKey[k] = map[string]bool{}
					}
					byKey[k][e.EventID] = true
				}
			}
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return byKey, nil
}
