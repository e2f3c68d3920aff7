package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, "deploy", "grafana", "dashboards", "rcm-overview.json"), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDashboardLayout(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "rcm-overview" || d.Title != "RCM overview" {
		t.Errorf("uid %q title %q", d.UID, d.Title)
	}
	hasDatasourceVar := false
	for _, v := range d.Templating.List {
		hasDatasourceVar = hasDatasourceVar || (v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus")
	}
	if !hasDatasourceVar {
		t.Error("no datasource variable of type prometheus")
	}
	ids := map[int]bool{}
	taken := map[[2]int]int{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[[2]int{x, y}]; ok {
					t.Fatalf("panel %q overlaps panel %d at %d,%d", p.Title, other, x, y)
				}
				taken[[2]int{x, y}] = p.ID
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q query %s is empty", p.Title, q.RefID)
			}
			if unknown := unknownSeries(q.Expr); len(unknown) > 0 {
				t.Errorf("panel %q selects series no service exposes: %v", p.Title, unknown)
			}
		}
	}
}

// The dashboard shows what the platform is judged by.
func TestDashboardCoverage(t *testing.T) {
	var all strings.Builder
	for _, p := range loadDashboard(t).Panels {
		for _, q := range p.Targets {
			all.WriteString(q.Expr + "\n")
		}
	}
	for _, m := range []string{
		"rcm_http_requests_total",
		"rcm_http_request_duration_seconds_bucket",
		"rcm_outbox_pending_events",
		"rcm_outbox_oldest_event_age_seconds",
		"rcm_kafka_consumer_lag",
		"rcm_compliance_event_to_appended_seconds_bucket",
		"rcm_feed_delivery_latency_seconds_bucket",
		"rcm_compliance_appends_total",
		"rcm_compliance_dead_letters_total",
		"rcm_feed_subscribers",
		"rcm_feed_deliveries_total",
		"rcm_feed_dropped_subscribers_total",
		"rcm_contact_decisions_total",
		"rcm_log_checkpoints_signed_total",
		"rcm_log_checkpoints_published_total",
		"rcm_log_checkpoint_publish_failures_total",
		"rcm_log_cosignatures_total",
		"rcm_log_witness_rejections_total",
		"rcm_log_consistency_failures_total",
		"rcm_log_proof_duration_seconds_bucket",
	} {
		if !strings.Contains(all.String(), m) {
			t.Errorf("no panel queries %s", m)
		}
	}
	for _, q := range []string{"histogram_quantile(0.5,", "histogram_quantile(0.99,"} {
		if !strings.Contains(all.String(), q) {
			t.Errorf("no panel computes %s…)", q)
		}
	}
}

// Every query is valid PromQL: promtool parses them as recording rules,
// with Grafana's interval variables replaced by durations.
func TestDashboardQueriesParse(t *testing.T) {
	tool := promtool(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h")
	for _, p := range loadDashboard(t).Panels {
		for _, q := range p.Targets {
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:panel_%d:%s", p.ID, q.RefID), Expr: vars.Replace(q.Expr)})
		}
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s", err, indent(string(out)))
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string `yaml:"name"`
			UID       string `yaml:"uid"`
			Type      string `yaml:"type"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml"), &ds); err != nil {
		t.Fatal(err)
	}
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 {
		t.Fatalf("datasources: %+v", ds)
	}
	if d := ds.Datasources[0]; d.Type != "prometheus" || d.UID != "prometheus" || d.URL != "http://prometheus:9090" || !d.IsDefault {
		t.Errorf("datasource %+v: want the default prometheus datasource at http://prometheus:9090", d)
	}

	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy", "grafana", "provisioning", "dashboards", "rcm.yml"), &dp); err != nil {
		t.Fatal(err)
	}
	if dp.APIVersion != 1 || len(dp.Providers) != 1 || dp.Providers[0].Type != "file" || dp.Providers[0].Options.Path != grafanaDashboardsDir {
		t.Errorf("dashboard provider %+v: want one file provider of %s", dp, grafanaDashboardsDir)
	}
}

// grafanaDashboardsDir is where docker-compose mounts deploy/grafana/dashboards.
const grafanaDashboardsDir = "/etc/grafana/dashboards"
