package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// span is what the test keeps of an exported span.
type span struct {
	service, name, traceID, spanID, parentID string
	kind                                     tracepb.Span_SpanKind
	attrs                                    map[string]string
}

// otlpReceiver is a small OTLP/HTTP collector of spans, served on
// 127.0.0.1, that the services export to.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				attrs := map[string]string{}
				for _, a := range s.Attributes {
					attrs[a.Key] = a.GetValue().GetStringValue()
				}
				o.spans = append(o.spans, span{service: service, name: s.Name, kind: s.Kind, attrs: attrs,
					traceID: hex.EncodeToString(s.TraceId), spanID: hex.EncodeToString(s.SpanId), parentID: hex.EncodeToString(s.ParentSpanId)})
			}
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans of traceID.
func (o *otlpReceiver) trace(traceID string) []span {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []span
	for _, s := range o.spans {
		if s.traceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// traceOf returns the trace id of the gateway's span of the request with
// id requestID, or "".
func (o *otlpReceiver) traceOf(requestID string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.spans {
		if s.service == stack.Gateway && s.attrs["rcm.request_id"] == requestID {
			return s.traceID
		}
	}
	return ""
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
	recv := &otlpReceiver{}
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
	if root := find(spans, stack.Gateway, "POST /v1/documents/{documentID}/rcm"); root.parentID != hex.EncodeToString(parent[:]) {
		t.Errorf("got the gateway's span under %q, want under the caller's span %x", root.parentID, parent)
	}

	// The opt-out, without: the gateway starts the trace.
	status, hdr, body := post("/v1/documents/"+doc+"/rcm/opt-out", map[string]any{"campaignId": campaignID, "channel": "sms", "notes": "stop"}, "")
	if status/100 != 2 {
		t.Fatalf("opt-out: got %d %v, want success", status, body)
	}
	var optOutTrace string
	eventually(t, 30*time.Second, "the opt-out's gateway span", func() bool {
		optOutTrace = recv.traceOf(hdr.Get("X-Request-Id"))
		return optOutTrace != ""
	})
	spans = wholeTrace(t, recv, optOutTrace)
	if root := find(spans, stack.Gateway, "POST /v1/documents/{documentID}/rcm/opt-out"); root.parentID != "" {
		t.Errorf("got the opt-out's gateway span under %q, want it the trace's root", root.parentID)
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
func wholeTrace(t *testing.T, recv *otlpReceiver, traceID string) []span {
	t.Helper()
	activity := "rcm.activity.v1"
	server := func(service string) func(span) bool {
		return func(s span) bool { return s.service == service && s.kind == tracepb.Span_SPAN_KIND_SERVER }
	}
	store := func(service string) func(span) bool {
		return func(s span) bool { return s.service == service && s.attrs["db.system.name"] == "mongodb" }
	}
	named := func(service, name string) func(span) bool {
		return func(s span) bool { return s.service == service && s.name == name }
	}
	want := []struct {
		what  string
		match func(span) bool
	}{
		{"gateway: request", server(stack.Gateway)},
		{"gateway: call to campaign", func(s span) bool { return s.service == stack.Gateway && s.kind == tracepb.Span_SPAN_KIND_CLIENT }},
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
	var spans []span
	missing := func() []string {
		spans = recv.trace(traceID)
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
				have = append(have, s.service+": "+s.name)
			}
			t.Fatalf("trace %s lacks %v; has %v", traceID, m, have)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Every span but the root hangs from a span of the trace.
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.spanID] = true
	}
	roots := 0
	for _, s := range spans {
		if !ids[s.parentID] {
			roots++
		}
	}
	if roots != 1 {
		t.Errorf("trace %s has %d spans whose parent is not in it, want one root", traceID, roots)
	}
	return spans
}

// find returns the span of service named name, failing the test if none.
func find(spans []span, service, name string) span {
	for _, s := range spans {
		if s.service == service && s.name == name {
			return s
		}
	}
	return span{name: "none: " + service + " " + name}
}
