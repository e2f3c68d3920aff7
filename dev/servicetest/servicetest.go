// Package servicetest runs a service in-process for its tests: the run
// function its main calls, with a test's environment, until the test stops
// it as SIGTERM would (by cancelling its context).
package servicetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Run is a service's run function, as its main calls it.
type Run func(ctx context.Context, getenv func(string) string, stdout io.Writer) error

// Instance is one running service.
type Instance struct {
	// URL is the base URL of its HTTP server.
	URL string
	// Logs holds what it logged.
	Logs *Logs

	stop func() time.Duration
}

// Stop cancels the service's context, waits for run to return and says
// how long that took; once. A run that returns an error fails the test.
func (i *Instance) Stop() time.Duration { return i.stop() }

// Start calls run with vars as its environment, waits until the service
// logged "<name> listening" and its /readyz answers 200, and returns it.
// It is stopped when the test ends, if not before.
func Start(t testing.TB, name string, run Run, vars map[string]string) *Instance {
	t.Helper()
	env := make(map[string]string, len(vars))
	for k, v := range vars {
		env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &Logs{listening: name + " listening", found: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, logs) }()
	inst := &Instance{Logs: logs}
	var once sync.Once
	var took time.Duration
	inst.stop = func() time.Duration {
		once.Do(func() {
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: run returned %v", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s: run did not return within 30s of being stopped", name)
			}
			took = time.Since(start)
		})
		return took
	}
	t.Cleanup(func() {
		inst.stop()
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, logs.String())
		}
	})
	select {
	case <-logs.found:
	case err := <-done:
		t.Fatalf("%s: run returned %v before listening; logs:\n%s", name, err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not log its address within 30s; logs:\n%s", name, logs.String())
	}
	inst.URL = "http://" + logs.addr()
	Eventually(t, 30*time.Second, name+" to be ready", func() bool {
		resp, err := http.Get(inst.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return inst
}

// Logs collects a service's JSON log lines.
type Logs struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	listening string
	address   string
	found     chan struct{}
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.address == "" {
		for _, line := range bytes.Split(p, []byte("\n")) {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == l.listening {
				l.address = rec.Addr
				close(l.found)
				break
			}
		}
	}
	return len(p), nil
}

func (l *Logs) addr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.address
}

// String returns every line logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Messages returns the msg of every line logged so far, in order.
func (l *Logs) Messages() []string {
	var out []string
	for _, line := range bytes.Split([]byte(l.String()), []byte("\n")) {
		var rec struct{ Msg string }
		if json.Unmarshal(line, &rec) == nil {
			out = append(out, rec.Msg)
		}
	}
	return out
}

// Eventually polls cond until it holds, failing the test after within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // the polling interval, not a wait for the outcome
	}
}

// Event returns a valid event of account, by n in turn a campaign start,
// an opt-out or a campaign end.
func Event(gen *ids.Generator, account string, n int) events.Event {
	ev := events.Event{
		EventID:    gen.New(ids.EventPrefix),
		AccountID:  account,
		DocumentID: fmt.Sprintf("doc_%d", n%3),
		CampaignID: gen.New(ids.CampaignPrefix),
		Actor:      events.Actor{Type: events.ActorUser, ID: "user_" + account, SessionID: "sess_1"},
		OccurredAt: events.FormatTime(time.Now()),
	}
	switch n % 3 {
	case 0:
		now := ev.OccurredAt
		ev.EventType = events.TypeCampaignStarted
		ev.Campaign = &events.CampaignRecord{
			ID: ev.CampaignID, DocumentID: ev.DocumentID, SMS: true, Email: true, Tone: "friendly", Cadence: "weekly",
			Active: true, ActiveChannels: []string{"sms", "email"}, OptOuts: []events.OptOutRecord{},
			CreatedBy: ev.Actor.ID, CreatedAt: now, UpdatedAt: now,
		}
	case 1:
		deactivated, active := false, true
		ev.EventType = events.TypeOptOut
		ev.Channel, ev.Notes = "sms", "private note"
		ev.Deactivated, ev.Active, ev.ActiveChannels = &deactivated, &active, []string{"email"}
	default:
		ev.EventType = events.TypeCampaignEnded
		ev.Reason = events.ReasonLoanCurrent
		status := "CURRENT"
		ev.LoanStatus = &status
		ev.Actor = events.Actor{Type: events.ActorSystem, ID: "rcm/campaign"}
	}
	return ev
}

// Records returns the events as the campaign relay publishes them to
// topic.
func Records(t testing.TB, topic string, evs ...events.Event) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	for _, ev := range evs {
		m, err := events.NewMessage(ev, "")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, kafkarec.Record(m, topic))
	}
	return out
}

// Get sends a GET to url signed for account as the gateway would, and
// returns the status and the body.
func Get(t testing.TB, signer *principal.Signer, url, account string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := signer.Sign(req, principal.Principal{AccountID: account, UserID: "user_" + account}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// Env returns the environment of a service under test, with vars added:
// a free port, the test binary's broker and store, a database of its own,
// the development secret and a short drain.
func Env(t testing.TB, vars map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{
		"RCM_HTTP_ADDR":        "127.0.0.1:0",
		"RCM_KAFKA_BROKERS":    strings.Join(kafkatest.Brokers(t), ","),
		"RCM_MONGODB_URI":      mongotest.URI(t),
		"RCM_MONGODB_DATABASE": mongotest.NewDatabase(t),
		"RCM_DRAIN_TIMEOUT":    "5s",
		"RCM_INTERNAL_SECRET":  principal.DevSecret,
	}
	for k, v := range vars {
		env[k] = v
	}
	return env
}
