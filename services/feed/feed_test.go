package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTwoInstancesStreamEveryEventOnce runs two instances in one group:
// each stores only its partitions' accounts, yet a subscriber on either
// receives every event of its account, in order, once, and nothing of
// another account.
func TestTwoInstancesStreamEveryEventOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	instances := []*instance{e.start(t, nil), e.start(t, nil)}
	awaitStableGroup(t, e, len(instances))

	accounts := []string{"org_ant", "org_bee", "org_cat", "org_dog", "org_eel", "org_fox"}
	const perAccount = 8
	evs := map[string][]events.Event{}
	streams := map[string][]*stream{}
	var all []events.Event
	for _, acct := range accounts {
		evs[acct] = e.newEvents(acct, perAccount+1)
		for _, inst := range instances {
			streams[acct] = append(streams[acct], e.openStream(t, inst, acct, "", nil))
		}
	}
	// Interleave the accounts, as the topic would.
	for i := range perAccount {
		for _, acct := range accounts {
			all = append(all, evs[acct][i])
		}
	}
	e.produce(t, all[:len(all)/2]...)
	e.produce(t, all[len(all)/2:]...)

	for _, acct := range accounts {
		for i, s := range streams[acct] {
			checkSeqs(t, fmt.Sprintf("%s on instance %d", acct, i), s.items(t, perAccount), evs[acct], 1)
		}
	}
	// Nothing was sent twice: the next item on every stream is the next
	// event.
	var last []events.Event
	for _, acct := range accounts {
		last = append(last, evs[acct][perAccount])
	}
	e.produce(t, last...)
	for _, acct := range accounts {
		for i, s := range streams[acct] {
			checkSeqs(t, fmt.Sprintf("%s on instance %d, after", acct, i), s.items(t, 1), evs[acct], perAccount+1)
		}
	}
	for i, inst := range instances {
		if n := metric(t, inst, "rcm_feed_items_stored_total"); n == 0 {
			t.Fatalf("instance %d stored no item: the group did not share the partitions", i)
		}
	}
}

// awaitStableGroup waits until the group has members members, all
// assigned.
func awaitStableGroup(t *testing.T, e *env, members int) {
	t.Helper()
	adm := kadm.NewClient(kafkatest.Client(t))
	eventually(t, 30*time.Second, fmt.Sprintf("group %s to have %d stable members", e.group, members), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		groups, err := adm.DescribeGroups(ctx, e.group)
		if err != nil {
			return false
		}
		g, ok := groups[e.group]
		return ok && g.Err == nil && g.State == "Stable" && len(g.Members) == members
	})
}

// metric reads an unlabelled counter from the instance's /metrics.
func metric(t *testing.T, inst *instance, name string) float64 {
	t.Helper()
	resp, err := http.Get(inst.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestStreamCarriesOnlyItsAccount(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	inst := e.start(t, nil)
	a := e.openStream(t, inst, "org_a", "", nil)
	b := e.openStream(t, inst, "org_b", "", nil)
	evsA, evsB := e.newEvents("org_a", 3), e.newEvents("org_b", 4)
	e.produce(t, evsB[0], evsB[1], evsA[0], evsB[2], evsA[1])
	checkSeqs(t, "org_a", a.items(t, 2), evsA, 1)
	checkSeqs(t, "org_b", b.items(t, 3), evsB, 1)
	// Had anything of org_b reached org_a's stream, it would come before
	// org_a's next event.
	e.produce(t, evsB[3], evsA[2])
	checkSeqs(t, "org_a, next", a.items(t, 1), evsA, 3)
	checkSeqs(t, "org_b, next", b.items(t, 1), evsB, 4)
	// The history is scoped the same way.
	status, page, body := e.list(t, inst, "org_a", "")
	if status != http.StatusOK || len(page.Items) != 3 || page.Items[0].ID != evsA[2].EventID || page.Items[2].ID != evsA[0].EventID {
		t.Fatalf("org_a history: got %d %s, want org_a's 3 items newest first", status, body)
	}
}

func TestEachEventIsStoredOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	inst := e.start(t, nil)
	evs := e.newEvents("org_a", 3)
	x := e.records(t, evs[0])
	e.produceAndAwait(t, x...)
	e.produceAndAwait(t, e.records(t, evs[0])...) // the same event again
	batch := e.records(t, evs[1], evs[2])
	e.produceAndAwait(t, batch...)
	e.produceAndAwait(t, e.records(t, evs[1], evs[2])...) // the whole batch again

	status, page, body := e.list(t, inst, "org_a", "")
	if status != http.StatusOK || len(page.Items) != 3 || page.NextCursor != "" {
		t.Fatalf("got %d %s, want 3 items on one page", status, body)
	}
	for i, it := range page.Items {
		want := evs[2-i]
		if it.ID != want.EventID || it.Seq != int64(3-i) {
			t.Fatalf("item %d: got %s at %d, want %s at %d; body %s", i, it.ID, it.Seq, want.EventID, 3-i, body)
		}
	}
	if n := metric(t, inst, "rcm_feed_items_stored_total"); n != 3 {
		t.Fatalf("got %v items stored, want 3", n)
	}
}

func TestResumeFromLastEventID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	inst := e.start(t, nil)
	evs := e.newEvents("org_a", 9)

	first := e.openStream(t, inst, "org_a", "", nil)
	e.produce(t, evs[0:3]...)
	checkSeqs(t, "first connection", first.items(t, 3), evs, 1)
	first.close()

	// Disconnected while three more arrive.
	e.produceAndAwait(t, e.records(t, evs[3:6]...)...)

	byHeader := e.openStream(t, inst, "org_a", "", http.Header{"Last-Event-Id": {"3"}})
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := byHeader.resp.Header.Get(k); got != want {
			t.Fatalf("header %s: got %q, want %q", k, got, want)
		}
	}
	checkSeqs(t, "resumed by header, history", byHeader.items(t, 3), evs, 4)
	e.produce(t, evs[6:8]...)
	checkSeqs(t, "resumed by header, live", byHeader.items(t, 2), evs, 7)

	byQuery := e.openStream(t, inst, "org_a", "?lastEventId=5", nil)
	checkSeqs(t, "resumed by query, history", byQuery.items(t, 3), evs, 6)
	// No duplicate on either: the next item is the next event.
	e.produce(t, evs[8])
	checkSeqs(t, "resumed by header, next", byHeader.items(t, 1), evs, 9)
	checkSeqs(t, "resumed by query, next", byQuery.items(t, 1), evs, 9)

	for _, bad := range []string{"abc", "-1", "1.5"} {
		resp := e.request(t, context.Background(), inst, "org_a", "/v1/activity/stream", http.Header{"Last-Event-Id": {bad}})
		checkError(t, resp, http.StatusBadRequest, contract.MsgInvalidQuery)
	}
	resp := e.request(t, context.Background(), inst, "org_a", "/v1/activity/stream?lastEventId=x", nil)
	checkError(t, resp, http.StatusBadRequest, contract.MsgInvalidQuery)

	// Shutting down ends the open streams instead of waiting on them.
	if took := inst.stop(); took > 3*time.Second {
		t.Fatalf("shutdown with open streams took %v, want under 3s", took)
	}
	for name, s := range map[string]*stream{"by header": byHeader, "by query": byQuery} {
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %s still open after shutdown", name)
		}
	}
}

func checkError(t *testing.T, resp *http.Response, status int, msg string) {
	t.Helper()
	defer resp.Body.Close()
	var body httpx.ErrorBody
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &body)
	if resp.StatusCode != status || body.Error != msg {
		t.Fatalf("got %d %s, want %d %q", resp.StatusCode, raw, status, msg)
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	inst := e.start(t, map[string]string{"RCM_SSE_HEARTBEAT": "100ms"})
	s := e.openStream(t, inst, "org_a", "", nil)
	deadline := time.After(5 * time.Second)
	for beats := 0; beats < 2; {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.Comment != "heartbeat" || ev.ID != "" || ev.Data != "" {
				t.Fatalf("got %+v, want only heartbeat comments", ev)
			}
			beats++
		case <-deadline:
			t.Fatal("no two heartbeats within 5s at a 100ms interval")
		}
	}
}

func TestHistoryPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	inst := e.start(t, nil)
	evs := e.newEvents("org_a", 7)
	e.produceAndAwait(t, e.records(t, append(evs, e.newEvents("org_b", 2)...)...)...)

	pages := []struct {
		query      string
		wantSeqs   []int64
		wantCursor string
	}{
		{"", []int64{7, 6, 5, 4, 3, 2, 1}, ""},
		{"?limit=3", []int64{7, 6, 5}, "5"},
		{"?limit=3&cursor=5", []int64{4, 3, 2}, "2"},
		{"?limit=3&cursor=2", []int64{1}, ""},
		{"?limit=7", []int64{7, 6, 5, 4, 3, 2, 1}, ""},
		{"?limit=6", []int64{7, 6, 5, 4, 3, 2}, "2"},
		{"?cursor=1", []int64{}, ""},
		{"?cursor=100", []int64{7, 6, 5, 4, 3, 2, 1}, ""},
	}
	for _, p := range pages {
		t.Run("page"+p.query, func(t *testing.T) {
			status, page, body := e.list(t, inst, "org_a", p.query)
			if status != http.StatusOK || len(page.Items) != len(p.wantSeqs) || page.NextCursor != p.wantCursor {
				t.Fatalf("got %d %s, want seqs %v and nextCursor %q", status, body, p.wantSeqs, p.wantCursor)
			}
			for i, it := range page.Items {
				if it.Seq != p.wantSeqs[i] || it.ID != evs[it.Seq-1].EventID || it.Summary == "" || it.Type != evs[it.Seq-1].EventType {
					t.Fatalf("item %d: got %+v, want seq %d of %s", i, it, p.wantSeqs[i], evs[p.wantSeqs[i]-1].EventID)
				}
			}
			if !strings.Contains(body, `"items":[`) {
				t.Fatalf("body %s: items must be a JSON array", body)
			}
		})
	}
	for _, bad := range []string{"?limit=0", "?limit=201", "?limit=-1", "?limit=abc", "?cursor=abc", "?cursor=-3"} {
		t.Run("invalid"+bad, func(t *testing.T) {
			resp := e.request(t, context.Background(), inst, "org_a", "/v1/activity"+bad, nil)
			checkError(t, resp, http.StatusBadRequest, contract.MsgInvalidQuery)
		})
	}
	t.Run("limit 200", func(t *testing.T) {
		if status, page, body := e.list(t, inst, "org_a", "?limit=200"); status != http.StatusOK || len(page.Items) != 7 {
			t.Fatalf("got %d %s, want all 7", status, body)
		}
	})
	t.Run("another account", func(t *testing.T) {
		if status, page, body := e.list(t, inst, "org_nobody", ""); status != http.StatusOK || len(page.Items) != 0 || !strings.Contains(body, `"items":[]`) {
			t.Fatalf("got %d %s, want an empty page", status, body)
		}
	})
}

func TestMalformedRecordIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	inst := e.start(t, nil)
	valid := e.newEvents("org_a", 1)
	garbage := &kgo.Record{Topic: e.topic, Key: []byte("org_a"), Value: []byte("not json")}
	e.produceAndAwait(t, append([]*kgo.Record{garbage}, e.records(t, valid...)...)...)

	status, page, body := e.list(t, inst, "org_a", "")
	if status != http.StatusOK || len(page.Items) != 1 || page.Items[0].ID != valid[0].EventID {
		t.Fatalf("got %d %s, want the valid event stored after the malformed one", status, body)
	}
	cl := kafkatest.Client(t, kgo.ConsumeTopics(e.dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got *kgo.Record
	for got == nil {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("nothing on the dead-letter topic")
		}
		fetches.EachRecord(func(r *kgo.Record) { got = r })
	}
	headers := map[string]string{}
	for _, h := range got.Headers {
		headers[h.Key] = string(h.Value)
	}
	if string(got.Value) != "not json" || !strings.Contains(headers[kafkax.HeaderDLQReason], "malformed event") || headers[kafkax.HeaderDLQTopic] != e.topic {
		t.Fatalf("dead letter: got value %q headers %v, want the original with a reason", got.Value, headers)
	}
	if n := metric(t, inst, "rcm_feed_dead_letters_total"); n != 1 {
		t.Fatalf("got %v dead letters counted, want 1", n)
	}
}

func TestPrincipalRequired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	inst := e.start(t, nil)
	other, err := principal.NewSigner(strings.Repeat("x", 40), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		target string
		sign   func(r *http.Request)
	}{
		{"history without principal", "/v1/activity", func(*http.Request) {}},
		{"stream without principal", "/v1/activity/stream", func(*http.Request) {}},
		{"history signed with another secret", "/v1/activity", func(r *http.Request) {
			_ = other.Sign(r, principal.Principal{AccountID: "org_a", UserID: "user_a"})
		}},
		{"stream signed for another path", "/v1/activity/stream", func(r *http.Request) {
			signed, _ := http.NewRequest(http.MethodGet, inst.url+"/v1/activity", nil)
			_ = e.signer.Sign(signed, principal.Principal{AccountID: "org_a", UserID: "user_a"})
			r.Header.Set(principal.Header, signed.Header.Get(principal.Header))
		}},
		{"a principal header written by the client", "/v1/activity", func(r *http.Request) {
			r.Header.Set(principal.Header, `{"acct":"org_a","sub":"user_a"}`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, inst.url+tt.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			tt.sign(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			checkError(t, resp, http.StatusForbidden, httpx.MsgForbidden)
		})
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(inst.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: got %d, want 200 without a principal", path, resp.StatusCode)
		}
	}
}

// TestRefusesToStartWithoutSecret: with no RCM_INTERNAL_SECRET the service
// does not fall back to a known one; run returns at once, saying why.
func TestRefusesToStartWithoutSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	vars := map[string]string{}
	for k, v := range e.vars {
		vars[k] = v
	}
	delete(vars, "RCM_INTERNAL_SECRET")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, func(k string) string { return vars[k] }, io.Discard)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "RCM_INTERNAL_SECRET is not set") {
		t.Fatalf("got %v (context: %v), want an error at start naming RCM_INTERNAL_SECRET", err, ctx.Err())
	}
}

// TestStreamCap: past RCM_FEED_MAX_STREAMS open streams, a new one is
// answered 503 with Retry-After and the contract's body, and once one
// closes a new one is accepted.
func TestStreamCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	inst := e.start(t, map[string]string{"RCM_FEED_MAX_STREAMS": "3"})
	var open []*stream
	for _, acct := range []string{"org_a", "org_b", "org_a"} {
		open = append(open, e.openStream(t, inst, acct, "", nil))
	}
	resp := e.request(t, bounded(t), inst, "org_c", "/v1/activity/stream", nil)
	if ra := resp.Header.Get("Retry-After"); ra == "" {
		t.Errorf("the 4th stream: no Retry-After")
	}
	checkError(t, resp, http.StatusServiceUnavailable, contract.MsgUnavailable)

	open[1].close()
	eventually(t, 10*time.Second, "a stream to be accepted after one closed", func() bool {
		resp := e.request(t, bounded(t), inst, "org_c", "/v1/activity/stream", nil)
		ok := resp.StatusCode == http.StatusOK
		resp.Body.Close()
		return ok
	})
}

// TestLastEventIDBeyondHead: a Last-Event-ID past what the account's feed
// holds was not issued by this API: it is refused with 400 rather than
// answered with a stream that holds back the next items.
func TestLastEventIDBeyondHead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	inst := e.start(t, nil)
	evs := e.newEvents("org_a", 3)
	e.produceAndAwait(t, e.records(t, evs...)...)
	for _, bad := range []string{"4", "1000"} {
		resp := e.request(t, bounded(t), inst, "org_a", "/v1/activity/stream", http.Header{"Last-Event-Id": {bad}})
		checkError(t, resp, http.StatusBadRequest, "Invalid Last-Event-ID.")
		resp = e.request(t, bounded(t), inst, "org_a", "/v1/activity/stream?lastEventId="+bad, nil)
		checkError(t, resp, http.StatusBadRequest, "Invalid Last-Event-ID.")
	}
	// Another account's cursor is judged against this account's feed.
	resp := e.request(t, bounded(t), inst, "org_b", "/v1/activity/stream", http.Header{"Last-Event-Id": {"1"}})
	checkError(t, resp, http.StatusBadRequest, "Invalid Last-Event-ID.")
	// The head itself, and 0, are positions a client may hold.
	at := e.openStream(t, inst, "org_a", "", http.Header{"Last-Event-Id": {"3"}})
	zero := e.openStream(t, inst, "org_a", "", http.Header{"Last-Event-Id": {"0"}})
	checkSeqs(t, "from 0", zero.items(t, 3), evs, 1)
	more := e.newEvents("org_a", 4)
	e.produce(t, more[3])
	if it := at.items(t, 1)[0]; it.Seq != 4 || it.ID != more[3].EventID {
		t.Fatalf("from the head: got %d:%s, want 4:%s", it.Seq, it.ID, more[3].EventID)
	}
}

// bounded returns a context that ends in 10 s: a stream answered 200 where
// an error is expected would otherwise be read until the test times out.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
