package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/spantest"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// traceOf returns the trace id of the gateway's span of the request with
// id requestID, or "".
func traceOf(recv *spantest.Receiver, requestID string) string {
	spans := recv.Spans(func(s spantest.Span) bool {
		return s.Service == stack.Gateway && s.Attributes["rcm.request_id"] == requestID
	})
	if len(spans) == 0 {
		return ""
	}
	return spans[0].TraceID
}

// TestOneTraceThroughTheServices runs the binaries with export to an OTLP
// receiver and follows a start and an opt-out: each is one trace, from the
// gateway's request through the campaign service and its store, the
// record, the compliance append and the feed's store and fan-out, and the
// services' logs of it carry its trace id. The start comes with the
// caller's traceparent, which the trace continues; the opt-out without
// one, and its trace begins at the gateway.
func TestOneTraceThroughTheServices(t *testing.T) {
	t.Parallel()
	recv := &spantest.Receiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: recv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	logs := &lockedBuffer{}
	ctx := context.Background()
	tstk, err := stack.Start(ctx, stack.Config{
		DataDir: t.TempDir(), BinDir: binDir, RandomPorts: true, Logs: logs, Partitions: 1,
		Env: map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + ln.Addr().String(),
			"OTEL_BSP_SCHEDULE_DELAY":     "100",
		},
	})
	if err != nil {
		t.Fatalf("start the stack: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() { _ = tstk.Close() })

	acct := newAccount(t, "org")
	doc := "doc_traced_" + acct
	if err := tstk.PutDocuments(ctx, stack.Document{ID: doc, AccountID: acct, Loan: &stack.Loan{Status: "BEHIND"}, Version: 1}); err != nil {
		t.Fatal(err)
	}
	tok, err := tstk.Token(sessiontoken.Claims{Subject: "user_tracer", SessionID: "sess_trace", OrgID: acct})
	if err != nil {
		t.Fatal(err)
	}
	post := func(path string, body any, traceparent string) (int, http.Header, map[string]any) {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, tstk.GatewayURL()+path, bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, resp.Header, m
	}

	// A live subscriber: streaming works through the traced middleware
	// and transport.
	streamed := make(chan string, 16)
	sctx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	sreq, _ := http.NewRequestWithContext(sctx, http.MethodGet, tstk.GatewayURL()+"/v1/activity/stream", nil)
	sreq.Header.Set("Authorization", "Bearer "+tok)
	sreq.Header.Set("Accept", "text/event-stream")
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil || sresp.StatusCode != http.StatusOK {
		t.Fatalf("open the stream: %v %v", err, sresp)
	}
	go func() {
		defer sresp.Body.Close()
		sc := bufio.NewScanner(sresp.Body)
		for sc.Scan() {
			if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				streamed <- ev
			}
		}
	}()

	// The start, with the caller's trace context.
	var id [16]byte
	var parent [8]byte
	_, _ = rand.Read(id[:])
	_, _ = rand.Read(parent[:])
	startTrace := hex.EncodeToString(id[:])
	status, _, body := post("/v1/documents/"+doc+"/rcm", startBody(), "00-"+startTrace+"-"+hex.EncodeToString(parent[:])+"-01")
	if status != http.StatusCreated {
		t.Fatalf("start: got %d %v, want 201", status, body)
	}
	campaignID, _ := body["campaign"].(map[string]any)["id"].(string)
	spans := wholeTrace(t, recv, startTrace)
	if root := find(spans, stack.Gateway, "POST /v1/documents/{documentID}/rcm"); root.ParentID != hex.EncodeToString(parent[:]) {
		t.Errorf("got the gateway's span under %q, want under the caller's span %x", root.ParentID, parent)
	}

	// The opt-out, without: the gateway starts the trace.
	status, hdr, body := post("/v1/documents/"+doc+"/rcm/opt-out", map[string]any{"campaignId": campaignID, "channel": "sms", "notes": "stop"}, "")
	if status/100 != 2 {
		t.Fatalf("opt-out: got %d %v, want success", status, body)
	}
	var optOutTrace string
	eventually(t, 30*time.Second, "the opt-out's gateway span", func() bool {
		optOutTrace = traceOf(recv, hdr.Get("X-Request-Id"))
		return optOutTrace != ""
	})
	spans = wholeTrace(t, recv, optOutTrace)
	if root := find(spans, stack.Gateway, "POST /v1/documents/{documentID}/rcm/opt-out"); root.ParentID != "" {
		t.Errorf("got the opt-out's gateway span under %q, want it the trace's root", root.ParentID)
	}

	for _, want := range []string{"campaign_started", "opt_out"} {
		select {
		case got := <-streamed:
			if got != want {
				t.Errorf("streamed %q, want %q", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the stream did not deliver %s", want)
		}
	}

	// The services log with the trace ids.
	for _, tr := range []string{startTrace, optOutTrace} {
		logged := map[string]bool{}
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec struct {
				Service string `json:"service"`
				TraceID string `json:"trace_id"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.TraceID == tr {
				logged[rec.Service] = true
			}
		}
		for _, s := range []string{stack.Gateway, stack.Campaign} {
			if !logged[s] {
				t.Errorf("trace %s: no log line of %s carries its trace_id", tr, s)
			}
		}
	}
}

// wholeTrace waits until traceID holds the spans an action makes in every
// service, checks how they hang together, and returns them.
func wholeTrace(t *testing.T, recv *spantest.Receiver, traceID string) []spantest.Span {
	t.Helper()
	activity := "rcm.activity.v1"
	server := func(service string) func(spantest.Span) bool {
		return func(s spantest.Span) bool { return s.Service == service && s.Kind == tracepb.Span_SPAN_KIND_SERVER }
	}
	store := func(service string) func(spantest.Span) bool {
		return func(s spantest.Span) bool { return s.Service == service && s.Attributes["db.system.name"] == "mongodb" }
	}
	named := func(service, name string) func(spantest.Span) bool {
		return func(s spantest.Span) bool { return s.Service == service && s.Name == name }
	}
	want := []struct {
		what  string
		match func(spantest.Span) bool
	}{
		{"gateway: request", server(stack.Gateway)},
		{"gateway: call to campaign", func(s spantest.Span) bool {
			return s.Service == stack.Gateway && s.Kind == tracepb.Span_SPAN_KIND_CLIENT
		}},
		{"campaign: request", server(stack.Campaign)},
		{"campaign: store", store(stack.Campaign)},
		{"campaign: publish", named(stack.Campaign, events.Topic+" publish")},
		{"compliance: receive", named(stack.Compliance, events.Topic+" receive")},
		{"compliance: process", named(stack.Compliance, events.Topic+" process")},
		{"compliance: append", store(stack.Compliance)},
		{"feed: process", named(stack.Feed, events.Topic+" process")},
		{"feed: store", store(stack.Feed)},
		{"feed: publish the item", named(stack.Feed, activity+" publish")},
		{"feed: the hub receives it", named(stack.Feed, activity+" receive")},
	}
	var spans []spantest.Span
	missing := func() []string {
		spans = recv.Spans(func(s spantest.Span) bool { return s.TraceID == traceID })
		var out []string
		for _, w := range want {
			if !slices.ContainsFunc(spans, w.match) {
				out = append(out, w.what)
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for m := missing(); len(m) > 0; m = missing() {
		if time.Now().After(deadline) {
			var have []string
			for _, s := range spans {
				have = append(have, s.Service+": "+s.Name)
			}
			t.Fatalf("trace %s lacks %v; has %v", traceID, m, have)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Every span but the root hangs from a span of the trace.
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.SpanID] = true
	}
	roots := 0
	for _, s := range spans {
		if !ids[s.ParentID] {
			roots++
		}
	}
	if roots != 1 {
		t.Errorf("trace %s has %d spans whose parent is not in it, want one root", traceID, roots)
	}
	return spans
}

// find returns the span of service named name, failing the test if none.
func find(spans []spantest.Span, service, name string) spantest.Span {
	for _, s := range spans {
		if s.Service == service && s.Name == name {
			return s
		}
	}
	return spantest.Span{Name: "none: " + service + " " + name}
}
