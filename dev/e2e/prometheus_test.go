package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
)

// prometheusTool returns the path of a Prometheus binary (promtool or
// prometheus), installing Debian's package with the project's script when
// it is missing.
func prometheusTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "prometheus", "install.sh")
	if out, err := exec.Command(script).CombinedOutput(); err != nil {
		t.Fatalf("%s is missing and could not be installed: %v\n%s", name, err, out)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMetricsPassPromtool lints every service's real /metrics output with
// promtool check metrics, after some traffic so that every series exists.
func TestMetricsPassPromtool(t *testing.T) {
	t.Parallel()
	promtool := prometheusTool(t, "promtool")
	acct := newAccount(t, "org")
	tok := token(t, acct)
	putDoc(t, "doc_prom_"+acct, acct, "BEHIND", 1)
	startCampaign(t, tok, "doc_prom_"+acct, startBody())
	waitLog(t, tok, 1)
	eventually(t, 30*time.Second, "consumer lag to be measured", func() bool {
		resp, err := http.Get(stk.URL(stack.Compliance) + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return bytes.Contains(b, []byte("\nrcm_kafka_consumer_lag{"))
	})
	for _, svc := range stack.Services {
		resp, err := http.Get(stk.URL(svc) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("%s: promtool check metrics: %v\n%s", svc, err, out)
		}
		for _, want := range map[string][]string{
			stack.Gateway:    {"rcm_http_request_duration_seconds_bucket", "rcm_auth_failures_total", "go_goroutines", "process_resident_memory_bytes"},
			stack.Campaign:   {"rcm_outbox_pending_events", "rcm_outbox_oldest_event_age_seconds", "rcm_outbox_publish_total", "rcm_mongodb_command_duration_seconds_bucket", "rcm_kafka_consumer_lag", "rcm_kafka_request_duration_e2e_seconds_bucket"},
			stack.Compliance: {"rcm_compliance_appends_total", "rcm_compliance_append_batch_duration_seconds_bucket", "rcm_compliance_dead_letters_total", "rcm_compliance_event_to_appended_seconds_bucket", "rcm_kafka_consumer_lag"},
			stack.Feed:       {"rcm_feed_subscribers", "rcm_feed_deliveries_total", "rcm_feed_delivery_latency_seconds_bucket", "rcm_feed_dropped_subscribers_total"},
		}[svc] {
			if !bytes.Contains(body, []byte("\n"+want)) {
				t.Errorf("%s exposes no %s", svc, want)
			}
		}
		if bytes.Contains(body, []byte(`route="/v1/documents/doc_`)) {
			t.Errorf("%s labels a metric with a raw path", svc)
		}
	}
}

// TestPrometheusScrapesTheStack runs a real Prometheus server against the
// running stack: all four targets are up, and a request made through the
// gateway shows up in a query.
func TestPrometheusScrapesTheStack(t *testing.T) {
	t.Parallel()
	bin := prometheusTool(t, "prometheus")
	dir := t.TempDir()
	var targets []string
	config := "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
	for _, svc := range stack.Services {
		addr := strings.TrimPrefix(stk.URL(svc), "http://")
		targets = append(targets, addr)
		config += fmt.Sprintf("  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", svc, addr)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", logs.String())
		}
	})
	query := func(q string) []map[string]any {
		resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var out struct {
			Data struct {
				Result []map[string]any `json:"result"`
			} `json:"data"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return out.Data.Result
	}
	eventually(t, time.Minute, "all four targets up", func() bool {
		up := query(`up == 1`)
		return len(up) == len(stack.Services)
	})
	// A request through the gateway, on a route only this test uses.
	tok := token(t, newAccount(t, "org"))
	for i := 0; i < 3; i++ {
		if r := call(t, "GET", "/v1/compliance-log/verify", tok, nil); r.Status != http.StatusOK {
			t.Fatalf("verify: %d", r.Status)
		}
	}
	eventually(t, time.Minute, "the request in Prometheus", func() bool {
		res := query(`sum(rcm_http_requests_total{job="gateway",route="/v1/compliance-log/verify",method="GET",code="200"})`)
		if len(res) != 1 {
			return false
		}
		v, _ := res[0]["value"].([]any)
		return len(v) == 2 && v[1] != "0"
	})
}
