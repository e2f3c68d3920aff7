package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/dev/testenv"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// env is one test's configuration: fresh topics and a fresh database, so
// that tests run in parallel on the shared broker and store.
type env struct {
	vars     map[string]string
	topic    string
	dlq      string
	activity string
	group    string
	gen      *ids.Generator
	signer   *principal.Signer
	producer *kgo.Client
}

func newEnv(t testing.TB, partitions int32) *env {
	t.Helper()
	e := &env{
		topic:    kafkatest.NewTopic(t, partitions),
		dlq:      kafkatest.NewTopic(t, 1),
		activity: kafkatest.NewTopic(t, partitions),
		gen:      ids.NewGenerator(time.Now),
	}
	e.group = "rcm-feed-" + strings.ReplaceAll(e.topic, ".", "-")
	e.vars = servicetest.Env(t, map[string]string{
		"RCM_EVENTS_TOPIC":     e.topic,
		"RCM_DLQ_TOPIC":        e.dlq,
		"RCM_ACTIVITY_TOPIC":   e.activity,
		"RCM_FEED_GROUP":       e.group,
		"RCM_KAFKA_PARTITIONS": fmt.Sprint(partitions),
		"RCM_SSE_HEARTBEAT":    "15s",
		"RCM_LOG_LEVEL":        "info",
	})
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	e.signer = signer
	e.producer = kafkatest.Client(t)
	return e
}

// instance is one running feed service.
type instance struct {
	url  string
	stop func() time.Duration
}

// start calls run in-process, as main does, and returns once the service
// is ready. It is stopped when the test ends, if not before.
func (e *env) start(t testing.TB, overrides map[string]string) *instance {
	t.Helper()
	vars := map[string]string{}
	for k, v := range e.vars {
		vars[k] = v
	}
	for k, v := range overrides {
		vars[k] = v
	}
	inst := servicetest.Start(t, "feed", run, vars)
	return &instance{url: inst.URL, stop: inst.Stop}
}

// eventually polls cond until it holds, failing the test after within.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	servicetest.Eventually(t, within, what, cond)
}

// event returns a valid event of account: a campaign start, an opt-out or
// a campaign end, in turn by n.
func (e *env) event(account string, n int) events.Event { return servicetest.Event(e.gen, account, n) }

// newEvents returns n valid events of account.
func (e *env) newEvents(account string, n int) []events.Event {
	out := make([]events.Event, n)
	for i := range out {
		out[i] = e.event(account, i)
	}
	return out
}

func (e *env) records(t testing.TB, evs ...events.Event) []*kgo.Record {
	t.Helper()
	return servicetest.Records(t, e.topic, evs...)
}

// produce publishes the events and returns once the broker has them.
func (e *env) produce(t testing.TB, evs ...events.Event) {
	t.Helper()
	e.produceRecords(t, e.records(t, evs...)...)
}

func (e *env) produceRecords(t testing.TB, rs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.producer.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// produceAndAwait publishes the records and returns once the feed's group
// has committed past them, that is, stored them.
func (e *env) produceAndAwait(t testing.TB, rs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkax.ProduceAwaitGroup(ctx, e.producer, e.group, rs...); err != nil {
		t.Fatal(err)
	}
}

// request sends a request signed for account as the gateway would; an
// empty account sends none.
func (e *env) request(t testing.TB, ctx context.Context, inst *instance, account, target string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, inst.url+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if account != "" {
		if err := e.signer.Sign(req, principal.Principal{AccountID: account, UserID: "user_" + account}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return resp
}

type activityPage struct {
	Items      []activity.Item `json:"items"`
	NextCursor string          `json:"nextCursor"`
}

// list GETs a page of account's history.
func (e *env) list(t testing.TB, inst *instance, account, query string) (int, activityPage, string) {
	t.Helper()
	resp := e.request(t, context.Background(), inst, account, "/v1/activity"+query, nil)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var p activityPage
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatalf("body %s: %v", raw, err)
		}
	}
	return resp.StatusCode, p, string(raw)
}

// sseEvent is one event or comment read from a stream.
type sseEvent struct {
	ID, Event, Data string
	Comment         string
}

// stream is an open SSE connection.
type stream struct {
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
	done   chan struct{}
}

// openStream connects account's subscriber and returns once the response
// headers arrived, that is, once it is subscribed.
func (e *env) openStream(t testing.TB, inst *instance, account, query string, header http.Header) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp := e.request(t, ctx, inst, account, "/v1/activity/stream"+query, header)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("stream: got %d %s, want 200", resp.StatusCode, body)
	}
	s := &stream{resp: resp, events: make(chan sseEvent, 1024), cancel: cancel, done: make(chan struct{})}
	go s.read()
	t.Cleanup(s.close)
	return s
}

func (s *stream) read() {
	defer close(s.done)
	defer close(s.events)
	sc := bufio.NewScanner(s.resp.Body)
	var cur sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			s.events <- cur
			cur = sseEvent{}
		case strings.HasPrefix(line, ":"):
			cur.Comment = strings.TrimSpace(strings.TrimPrefix(line, ":"))
		case strings.HasPrefix(line, "id: "):
			cur.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			cur.Event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.Data += strings.TrimPrefix(line, "data: ")
		}
	}
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
	<-s.done
}

// next returns the next event (not a comment), failing after within.
func (s *stream) next(t testing.TB, within time.Duration) sseEvent {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("stream ended while an event was expected")
			}
			if ev.Comment != "" && ev.ID == "" && ev.Data == "" {
				continue
			}
			return ev
		case <-timer.C:
			t.Fatalf("no event within %v", within)
			return sseEvent{}
		}
	}
}

// items reads n items and checks that each is well-formed.
func (s *stream) items(t testing.TB, n int) []activity.Item {
	t.Helper()
	var out []activity.Item
	for range n {
		ev := s.next(t, 20*time.Second)
		var it activity.Item
		if err := json.Unmarshal([]byte(ev.Data), &it); err != nil {
			t.Fatalf("data %q: %v", ev.Data, err)
		}
		if ev.ID != it.Cursor() || ev.Event != it.Type {
			t.Fatalf("got id %q event %q for item %+v, want the item's cursor and type", ev.ID, ev.Event, it)
		}
		out = append(out, it)
	}
	return out
}

// checkSeqs fails unless items are exactly seqs from..to of evs, in order.
func checkSeqs(t testing.TB, what string, items []activity.Item, evs []events.Event, from int) {
	t.Helper()
	for i, it := range items {
		want := int64(from + i)
		if it.Seq != want || it.ID != evs[want-1].EventID {
			var got []string
			for _, it := range items {
				got = append(got, fmt.Sprintf("%d:%s", it.Seq, it.ID))
			}
			t.Fatalf("%s: item %d is %d:%s, want %d:%s; got %v", what, i, it.Seq, it.ID, want, evs[want-1].EventID, got)
		}
	}
}
