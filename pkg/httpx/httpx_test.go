package httpx

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/api/contract"
)

func newTestServer(t *testing.T, routes func(r interface {
	Get(string, http.HandlerFunc)
	Post(string, http.HandlerFunc)
})) (*httptest.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	r := NewRouter(logger, NewHTTPMetrics(reg, "test"), time.Second)
	routes(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv, reg
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	srv, reg := newTestServer(t, func(r interface {
		Get(string, http.HandlerFunc)
		Post(string, http.HandlerFunc)
	}) {
		r.Get("/panic/{id}", func(http.ResponseWriter, *http.Request) { panic("boom") })
		r.Get("/items/{id}", Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
			return ErrNotFound.With("field", "id")
		}))
		r.Post("/json", Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
			m, err := ReadJSONObject(r)
			if err != nil {
				return err
			}
			WriteJSON(w, http.StatusOK, m)
			return nil
		}))
		r.Get("/down", Handle(logger, func(http.ResponseWriter, *http.Request) error { return ErrUnavailable }))
		r.Get("/secret", Handle(logger, func(http.ResponseWriter, *http.Request) error { return io.ErrUnexpectedEOF }))
		r.Get("/store-down", Handle(logger, func(http.ResponseWriter, *http.Request) error {
			return fmt.Errorf("find campaign: %w", temporary{})
		}))
	})
	limited := httptest.NewServer(LimitBody(16)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := ReadJSONObject(r); err != nil {
			WriteError(w, r, logger, err)
		}
	})))
	t.Cleanup(limited.Close)

	tests := []struct {
		name       string
		url        string
		method     string
		body       string
		reqID      string
		wantStatus int
		wantError  string
		wantHeader map[string]string
	}{
		{name: "panic is a 500", url: srv.URL + "/panic/1", wantStatus: 500, wantError: MsgInternal},
		{name: "contract error with details", url: srv.URL + "/items/7", wantStatus: 404, wantError: contract.MsgNotFound},
		{name: "unknown route", url: srv.URL + "/nowhere", wantStatus: 404, wantError: contract.MsgNotFound},
		{name: "wrong method", url: srv.URL + "/items/7", method: "DELETE", wantStatus: 405, wantError: MsgMethodNotAllowed},
		{name: "unavailable says when to retry", url: srv.URL + "/down", wantStatus: 503, wantError: contract.MsgUnavailable, wantHeader: map[string]string{"Retry-After": "2"}},
		{name: "a temporary failure is unavailable", url: srv.URL + "/store-down", wantStatus: 503, wantError: contract.MsgUnavailable, wantHeader: map[string]string{"Retry-After": "2"}},
		{name: "internal errors are not shown", url: srv.URL + "/secret", wantStatus: 500, wantError: MsgInternal},
		{name: "caller's request id is kept", url: srv.URL + "/items/7", reqID: "abc-123-def", wantStatus: 404, wantError: contract.MsgNotFound, wantHeader: map[string]string{"X-Request-Id": "abc-123-def"}},
		{name: "a forged request id is replaced", url: srv.URL + "/items/7", reqID: "x\u2028injected", wantStatus: 404, wantError: contract.MsgNotFound},
		{name: "json ok", url: srv.URL + "/json", method: "POST", body: `{"a":1}`, wantStatus: 200},
		{name: "declared body over the limit", url: limited.URL, method: "POST", body: `{"aaaaaaaaaaaaaaaaaaaa":1}`, wantStatus: 413, wantError: contract.MsgBodyTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req, _ := http.NewRequest(method, tt.url, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			if tt.reqID != "" {
				req.Header.Set(HeaderRequestID, tt.reqID)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			id := resp.Header.Get(HeaderRequestID)
			if tt.url != limited.URL && (id == "" || strings.ContainsAny(id, "\u2028\n")) {
				t.Fatalf("got request id %q, want a clean one", id)
			}
			for k, v := range tt.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Fatalf("header %s: got %q, want %q", k, got, v)
				}
			}
			if tt.wantError != "" {
				var body ErrorBody
				if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
					t.Fatal(err)
				}
				if body.Error != tt.wantError {
					t.Fatalf("got error %q, want %q", body.Error, tt.wantError)
				}
			}
		})
	}
	// The route label is the pattern, never the raw path.
	if n := testutil.CollectAndCount(reg, "rcm_http_requests_total"); n == 0 {
		t.Fatal("no request was counted")
	}
	if got := testutil.ToFloat64(mustCounter(t, reg, "/items/{id}")); got < 3 {
		t.Fatalf("got %v requests on /items/{id}, want at least 3", got)
	}
}

// temporary is a failure a retry may cure, as mongox.ErrUnavailable is.
type temporary struct{}

func (temporary) Error() string   { return "store unavailable" }
func (temporary) Temporary() bool { return true }

func mustCounter(t *testing.T, reg *prometheus.Registry, route string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := prometheus.NewCounter(prometheus.CounterOpts{Name: "sum"})
	for _, mf := range mfs {
		if mf.GetName() != "rcm_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && strings.Contains(l.GetValue(), "7") {
					t.Fatalf("a raw path became a label: %s", l.GetValue())
				}
				if l.GetName() == "route" && l.GetValue() == route {
					total.Add(m.GetCounter().GetValue())
				}
			}
		}
	}
	return total
}
