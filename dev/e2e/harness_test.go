// Package e2e runs the platform's built binaries as separate processes
// against the embedded broker and store, and checks the public contract
// through the gateway over real sockets.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/api/apitest"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
	"github.com/twmb/franz-go/pkg/kgo"
	"log/slog"
)

var (
	stk     *stack.Stack
	binDir  string
	oapi    *openapi3.T
	oRouter routers.Router
	logBuf  *lockedBuffer
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx := context.Background()
	var err error
	binDir, err = buildBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	dataDir, err := os.MkdirTemp("", "rcm-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dataDir)
	logBuf = &lockedBuffer{}
	stk, err = stack.Start(ctx, stack.Config{
		DataDir: dataDir, BinDir: binDir, RandomPorts: true, Logs: logBuf, Partitions: 3,
		Env: map[string]string{"RCM_OUTBOX_SWEEP_INTERVAL": "500ms", "RCM_OUTBOX_SWEEP_MIN_AGE": "2s", "RCM_KAFKA_LAG_INTERVAL": "1s"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start stack:", err, "\n", logBuf.String())
		return 1
	}
	oapi, err = apitest.LoadOpenAPI()
	if err == nil {
		oapi.Servers = openapi3.Servers{{URL: stk.GatewayURL()}}
		oRouter, err = legacy.NewRouter(oapi)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapi:", err)
		return 1
	}
	code := m.Run()
	writeFigures()
	if err := stk.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stop stack:", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "---- service logs (last 200 lines) ----")
		lines := strings.Split(logBuf.String(), "\n")
		fmt.Fprintln(os.Stderr, strings.Join(lines[max(0, len(lines)-200):], "\n"))
	}
	return code
}

// buildBinaries uses RCM_BIN_DIR when it holds the binaries (make test
// builds them first), else builds them into a temporary directory.
func buildBinaries() (string, error) {
	if dir := os.Getenv("RCM_BIN_DIR"); dir != "" {
		ok := true
		for _, s := range stack.Services {
			if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
				ok = false
			}
		}
		if ok {
			return dir, nil
		}
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dir, err := os.MkdirTemp("", "rcm-bin-")
	if err != nil {
		return "", err
	}
	for _, s := range append(append([]string{}, stack.Services...), "rcmctl") {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, s), "./services/"+s)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", s, err, out)
		}
	}
	return dir, nil
}

// newAccount returns a fresh account id, so tests sharing the stack never
// see each other's data.
func newAccount(t *testing.T, prefix string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// token mints a valid session token whose account is account: an org
// token when account starts with org_, a personal one otherwise.
func token(t *testing.T, account string) string {
	t.Helper()
	c := sessiontoken.Claims{Subject: "user_" + strings.TrimPrefix(account, "user_"), SessionID: "sess_e2e"}
	if strings.HasPrefix(account, "org_") {
		c.Subject = "user_member_of_" + account
		c.OrgID = account
	}
	tok, err := stk.Token(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// putDoc publishes a document and waits until the campaign service has it.
func putDoc(t *testing.T, id, account, status string, version int64) {
	t.Helper()
	d := stack.Document{ID: id, AccountID: account, Version: version}
	if status != "" {
		d.Loan = &stack.Loan{Status: status}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := stk.PutDocuments(ctx, d); err != nil {
		t.Fatal(err)
	}
}

// response is an answer of the gateway.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) JSON(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
	return m
}

// wantError asserts status and the exact error body of the contract.
func (r response) wantError(t *testing.T, status int, message string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("got status %d body %s, want %d %q", r.Status, r.Body, status, message)
	}
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
	if body.Error != message {
		t.Fatalf("got error %q, want %q", body.Error, message)
	}
}

// call sends a request to the gateway and checks what every response must
// carry: an X-Request-Id, and a status and body the OpenAPI file describes
// for the route.
func call(t *testing.T, method, path, tok string, body any, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, stk.GatewayURL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("%s %s: response has no X-Request-Id", method, path)
	}
	checkOpenAPI(t, req, r)
	return r
}

// checkOpenAPI validates a real response against the OpenAPI description.
func checkOpenAPI(t *testing.T, req *http.Request, r response) {
	t.Helper()
	route, params, err := oRouter.FindRoute(req)
	if err != nil {
		if strings.HasPrefix(req.URL.Path, "/v1/") && r.Status != http.StatusNotFound && r.Status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s -> %d: openapi.yaml does not describe it: %v", req.Method, req.URL.Path, r.Status, err)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status: r.Status,
		Header: r.Header,
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
		},
	}
	in.SetBodyBytes(r.Body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s -> %d does not match openapi.yaml: %v\nbody: %s", req.Method, req.URL.Path, r.Status, err, r.Body)
	}
}

// startBody is a valid start-campaign body.
func startBody() map[string]any {
	return map[string]any{"sms": true, "email": true, "call": false, "tone": "professional and empathetic", "cadence": "day 1, day 5, day 14"}
}

// startCampaign starts a campaign and returns its record.
func startCampaign(t *testing.T, tok, doc string, body map[string]any) map[string]any {
	t.Helper()
	r := call(t, http.MethodPost, "/v1/documents/"+doc+"/rcm", tok, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("start on %s: got %d %s, want 201", doc, r.Status, r.Body)
	}
	c, ok := r.JSON(t)["campaign"].(map[string]any)
	if !ok {
		t.Fatalf("got %s, want a campaign", r.Body)
	}
	return c
}

// eventLog reads rcm.campaign-events.v1 from the start, decoding and
// validating every record (CloudEvents headers and JSON Schema).
type eventLog struct {
	cl *kgo.Client
}

func newEventLog(t *testing.T) *eventLog {
	t.Helper()
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{stk.KafkaAddr()}}, "e2e-reader", prometheus.NewRegistry(), slog.New(slog.DiscardHandler),
		kgo.ConsumeTopics(events.Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &eventLog{cl: cl}
}

// waitFor polls the topic until the events of account satisfy done, and
// returns them in topic order. Every record is checked as it arrives.
func (l *eventLog) waitFor(t *testing.T, account string, done func([]events.Event) bool) []events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []events.Event
	for {
		if done(got) {
			return got
		}
		fetches := l.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for events of %s; have %d: %v", account, len(got), types(got))
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Key) != account {
				return
			}
			e, err := kafkarec.Decode(r)
			if err != nil {
				t.Errorf("record at %d/%d: %v", r.Partition, r.Offset, err)
				return
			}
			got = append(got, e)
		})
	}
}

func types(evs []events.Event) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.EventType)
	}
	return out
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	figuresMu sync.Mutex
	figures   []string
)

// figure records a measured figure of a test (requests sent, accepted,
// events published, entries appended, duplicates, losses). They are
// logged, and written at the end to the file RCM_TEST_FIGURES names, which
// make test prints: go test shows nothing of a passing package.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	line := t.Name() + ": " + fmt.Sprintf(format, args...)
	t.Log(line)
	figuresMu.Lock()
	figures = append(figures, line)
	figuresMu.Unlock()
}

func writeFigures() {
	path := os.Getenv("RCM_TEST_FIGURES")
	if path == "" {
		return
	}
	figuresMu.Lock()
	defer figuresMu.Unlock()
	_ = os.WriteFile(path, []byte(strings.Join(figures, "\n")+"\n"), 0o644)
}
