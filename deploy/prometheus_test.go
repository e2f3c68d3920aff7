package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestPromtool runs promtool's own checks: the configuration, the rules and
// the rules' unit tests (deploy/prometheus/check.sh).
func TestPromtool(t *testing.T) {
	promtool(t)
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := yaml.Unmarshal(readFile(t, "deploy", "prometheus", "rules.yml"), &rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

// Every alert waits before it fires, says how bad it is, and points at its
// runbook section, which exists.
func TestAlertConventions(t *testing.T) {
	docs := string(readFile(t, "docs", "production.md"))
	rf := loadRules(t)
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			name := r.Alert
			if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
				t.Errorf("%s: for %q: want a positive duration", name, r.For)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q: want critical or warning", name, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", name, a)
				}
			}
			if want := "docs/production.md#" + strings.ToLower(name); r.Annotations["runbook"] != want {
				t.Errorf("%s: runbook %q, want %q", name, r.Annotations["runbook"], want)
			}
			if !regexp.MustCompile(`(?m)^#+ ` + name + `$`).MatchString(docs) {
				t.Errorf("%s: docs/production.md has no heading %q for its runbook", name, name)
			}
			if unknown := unknownSeries(r.Expr); len(unknown) > 0 {
				t.Errorf("%s selects series no service exposes: %v", name, unknown)
			}
		}
	}
	if alerts < 10 {
		t.Errorf("%d alerts; the file lost some", alerts)
	}
}

// The alerts the platform relies on are all there.
func TestAlertsPresent(t *testing.T) {
	rf := loadRules(t)
	have := map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			have[r.Alert] += r.Expr
		}
	}
	for alert, metric := range map[string]string{
		"RCMServiceDown":                 "up",
		"RCMServiceNotReady":             "rcm_http_requests_total",
		"RCMGatewayErrorRatioHigh":       "rcm_http_requests_total",
		"RCMGatewayLatencyHigh":          "rcm_http_request_duration_seconds_bucket",
		"RCMOutboxEventsStuck":           "rcm_outbox_oldest_event_age_seconds",
		"RCMConsumerLagHigh":             "rcm_kafka_consumer_lag",
		"RCMConsumerLagGrowing":          "rcm_kafka_consumer_lag",
		"RCMDeadLetters":                 "rcm_compliance_dead_letters_total",
		"RCMFeedDeliveryLatencyHigh":     "rcm_feed_delivery_latency_seconds_bucket",
		"RCMComplianceAppendLatencyHigh": "rcm_compliance_event_to_appended_seconds_bucket",
		"RCMWitnessRejections":           "rcm_log_witness_rejections_total",
		"RCMLogConsistencyFailures":      "rcm_log_consistency_failures_total",
		"RCMContactOptOutBlocksSpike":    `rcm_contact_decisions_total{job="campaign", decision="blocked", reason="opted_out"}`,
	} {
		if !strings.Contains(have[alert], metric) {
			t.Errorf("alert %s on %s is missing", alert, metric)
		}
	}
	if !strings.Contains(have["RCMDeadLetters"], "rcm_feed_dead_letters_total") {
		t.Error("RCMDeadLetters does not watch the feed's dead letters")
	}
}

// rules_test.yml shows every alert firing at least once and quiet at least
// once.
func TestEveryAlertTestedBothWays(t *testing.T) {
	var tf struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name  string `yaml:"name"`
			Cases []struct {
				EvalTime  string `yaml:"eval_time"`
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy", "prometheus", "rules_test.yml"), &tf); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tf.RuleFiles, []string{"rules.yml"}) {
		t.Errorf("rule_files %v, want [rules.yml]", tf.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, c := range tc.Cases {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
			} else {
				quiet[c.Alertname] = true
			}
		}
	}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !fires[r.Alert] {
				t.Errorf("no test shows %s firing", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("no test shows %s staying quiet", r.Alert)
			}
		}
	}
}

// Prometheus scrapes each service under its own job name, at the address
// docker-compose gives it.
func TestScrapeConfig(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy", "prometheus", "prometheus.yml"), &cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cfg.RuleFiles, "rules.yml") {
		t.Errorf("rule_files %v does not load rules.yml", cfg.RuleFiles)
	}
	jobs := map[string][]string{}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %s", sc.JobName, sc.MetricsPath)
		}
		for _, s := range sc.StaticConfigs {
			jobs[sc.JobName] = append(jobs[sc.JobName], s.Targets...)
		}
	}
	for _, s := range services {
		want := []string{fmt.Sprintf("%s:%d", s.name, s.port)}
		if !slices.Equal(jobs[s.name], want) {
			t.Errorf("job %s targets %v, want %v", s.name, jobs[s.name], want)
		}
	}
}
