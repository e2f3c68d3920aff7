package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// These tests take the shared stack's dependencies away, so they do not
// run in parallel: Go runs them before the parallel tests resume.

// TestOutboxSurvivesACrash: with the broker down, a start is accepted (the
// outbox holds its event); the campaign service is then killed before it
// could publish. After the broker returns and the service restarts, the
// sweep publishes the event, exactly once.
func TestOutboxSurvivesACrash(t *testing.T) {
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_crash_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)

	stk.StopKafka()
	kafkaBack := false
	t.Cleanup(func() {
		if !kafkaBack {
			_ = stk.StartKafka(context.Background())
		}
	})
	id := startCampaign(t, tok, doc, startBody())["id"].(string)
	if r := call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": id, "channel": "email"}); r.Status != http.StatusOK {
		t.Fatalf("opt-out with the broker down: got %d %s, want 200", r.Status, r.Body)
	}
	campaign := stk.Process(stack.Campaign)
	if err := campaign.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := stk.StartKafka(context.Background()); err != nil {
		t.Fatal(err)
	}
	kafkaBack = true
	if err := campaign.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	log := newEventLog(t)
	evs := log.waitFor(t, acct, func(evs []events.Event) bool { return len(evs) >= 2 })
	time.Sleep(time.Second)
	evs = append(evs, log.waitFor(t, acct, func([]events.Event) bool { return true })...)
	if got := types(evs); len(got) != 2 || got[0] != events.TypeCampaignStarted || got[1] != events.TypeOptOut {
		t.Fatalf("got events %v, want campaign_started then opt_out, once each", got)
	}
	if evs[0].CampaignID != id {
		t.Fatalf("got campaign %s, want %s", evs[0].CampaignID, id)
	}
}

// TestRestartKeepsData stops a whole stack and starts a new one on the same
// data dir: campaigns made before are still there.
func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	start := func() *stack.Stack {
		s, err := stack.Start(context.Background(), stack.Config{DataDir: dir, BinDir: binDir, RandomPorts: true, Logs: logBuf, Partitions: 2, Seed: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	tok, err := s.Token(sessiontoken.Claims{Subject: stack.DemoAccount})
	if err != nil {
		t.Fatal(err)
	}
	req := func(s *stack.Stack, method, path, body string) (int, string) {
		r, _ := http.NewRequest(method, s.GatewayURL()+path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := req(s, "POST", "/v1/documents/doc_demo_behind/rcm", `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"c"}`)
	if status != http.StatusCreated {
		t.Fatalf("start on the seeded document: got %d %s", status, body)
	}
	if status, body := req(s, "POST", "/v1/documents/doc_demo_current/rcm", `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"c"}`); status != 400 {
		t.Fatalf("start on doc_demo_current: got %d %s, want 400", status, body)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	s = start()
	defer s.Close()
	// The key survives in the data dir; the issuer's random port does not.
	if tok, err = s.Token(sessiontoken.Claims{Subject: stack.DemoAccount}); err != nil {
		t.Fatal(err)
	}
	status, list := req(s, "GET", "/v1/documents/doc_demo_behind/rcm", "")
	if status != http.StatusOK || !strings.Contains(list, body[strings.Index(body, "rcm_"):strings.Index(body, "rcm_")+30]) {
		t.Fatalf("after restart: got %d %s, want the campaign made before", status, list)
	}
}

// TestServiceBinariesLinkNoEmbeddedServer: kfake and FerretDB live in the
// dev module only.
func TestServiceBinariesLinkNoEmbeddedServer(t *testing.T) {
	t.Parallel()
	for _, s := range append(append([]string{}, stack.Services...), "rcmctl") {
		bin := filepath.Join(binDir, s)
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
		if err != nil {
			t.Fatalf("go version -m %s: %v\n%s", s, err, out)
		}
		for _, banned := range []string{"kfake", "FerretDB", "kin-openapi"} {
			if strings.Contains(string(out), banned) {
				t.Errorf("%s links %s", s, banned)
			}
		}
	}
}
