package deploy

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeEnv is a complete .env for docker-compose.yml.
func composeEnv() map[string]string {
	return map[string]string{
		"RCM_INTERNAL_SECRET":          strings.Repeat("s", 64),
		"MONGO_ROOT_PASSWORD":          "rootpw",
		"RCM_CAMPAIGN_PASSWORD":        "campaignpw",
		"RCM_COMPLIANCE_PASSWORD":      "compliancepw",
		"RCM_FEED_PASSWORD":            "feedpw",
		"GRAFANA_ADMIN_PASSWORD":       "grafanapw",
		"RCM_CLERK_JWKS_URL":           "https://clerk.example.test/.well-known/jwks.json",
		"RCM_CLERK_ISSUER":             "https://clerk.example.test",
		"RCM_CLERK_AUTHORIZED_PARTIES": "https://app.example.test",
		"RCM_LOG_SIGNING_KEY_FILE":     "/run/keys/rcm_log_signing_key",
	}
}

// loadCompose loads docker-compose.yml with the compose specification's
// reference loader: schema validation, interpolation, merge keys and
// consistency checks, as `docker compose config` does.
func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	dir := root(t)
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yml")}},
		Environment: env,
	})
}

func mustLoadCompose(t *testing.T) *types.Project {
	t.Helper()
	p, err := loadCompose(t, composeEnv())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

func env(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

func TestComposeServices(t *testing.T) {
	p := mustLoadCompose(t)
	want := []string{"campaign", "compliance", "feed", "gateway", "grafana", "kafka", "kafka-topics", "mongo", "mongo-init", "mongo-keyfile", "prometheus"}
	if got := slices.Sorted(maps.Keys(p.Services)); !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	e := composeEnv()
	for _, svc := range services {
		s := p.Services[svc.name]
		t.Run(svc.name, func(t *testing.T) {
			if s.Build == nil || s.Build.Context != root(t) || s.Build.Dockerfile != "services/"+svc.name+"/Dockerfile" {
				t.Errorf("build %+v: want the repository root as context and services/%s/Dockerfile", s.Build, svc.name)
			}
			if _, err := os.Stat(filepath.Join(root(t), "services", svc.name, "Dockerfile")); err != nil {
				t.Error(err)
			}
			if got, want := env(s, "RCM_HTTP_ADDR"), fmt.Sprintf(":%d", svc.port); got != want {
				t.Errorf("RCM_HTTP_ADDR %q, want %q", got, want)
			}
			if got := env(s, "RCM_INTERNAL_SECRET"); got != e["RCM_INTERNAL_SECRET"] {
				t.Errorf("RCM_INTERNAL_SECRET %q is not the one from .env", got)
			}
			if s.Restart != "unless-stopped" {
				t.Errorf("restart %q", s.Restart)
			}
			hc := s.HealthCheck
			readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", svc.port)
			if hc == nil || len(hc.Test) < 2 || hc.Test[0] != "CMD" || !slices.Contains(hc.Test, readyz) {
				t.Errorf("healthcheck %+v: want a CMD that asks %s", hc, readyz)
			}
			if svc.name == "gateway" {
				return
			}
			if got := env(s, "RCM_KAFKA_BROKERS"); got != "kafka:9092" {
				t.Errorf("RCM_KAFKA_BROKERS %q", got)
			}
			if got := env(s, "RCM_KAFKA_CREATE_TOPICS"); got != "false" {
				t.Errorf("RCM_KAFKA_CREATE_TOPICS %q: the kafka-topics job owns the topics' settings", got)
			}
			user := "rcm-" + svc.name
			password := e["RCM_"+strings.ToUpper(svc.name)+"_PASSWORD"]
			wantURI := "mongodb://" + user + ":" + password + "@mongo:27017/?replicaSet=rs0&authSource=admin"
			if got := env(s, "RCM_MONGODB_URI"); got != wantURI {
				t.Errorf("RCM_MONGODB_URI %q, want %q", got, wantURI)
			}
			for _, dep := range []string{"kafka-topics", "mongo-init"} {
				if c := s.DependsOn[dep].Condition; c != types.ServiceConditionCompletedSuccessfully {
					t.Errorf("depends on %s: condition %q", dep, c)
				}
			}
		})
	}

	gw := p.Services["gateway"]
	for _, svc := range services[1:] {
		key := "RCM_" + strings.ToUpper(svc.name) + "_URL"
		if got, want := env(gw, key), fmt.Sprintf("http://%s:%d", svc.name, svc.port); got != want {
			t.Errorf("gateway %s %q, want %q", key, got, want)
		}
		if c := gw.DependsOn[svc.name].Condition; c != types.ServiceConditionHealthy {
			t.Errorf("gateway depends on %s: condition %q", svc.name, c)
		}
	}
	for _, key := range []string{"RCM_CLERK_JWKS_URL", "RCM_CLERK_ISSUER"} {
		if got := env(gw, key); got != e[key] {
			t.Errorf("gateway %s %q is not the one from .env", key, got)
		}
	}
	if got := env(p.Services["compliance"], "RCM_MONGODB_CREATE_INDEXES"); got != "false" {
		t.Errorf("compliance RCM_MONGODB_CREATE_INDEXES %q: its user has no index privilege", got)
	}
}

// Every service_healthy dependency has a healthcheck to wait for, and
// every dependency exists.
func TestComposeDependencies(t *testing.T) {
	p := mustLoadCompose(t)
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				t.Errorf("%s depends on unknown %s", name, dep)
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if target.HealthCheck == nil || len(target.HealthCheck.Test) == 0 {
					t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if target.Restart != "no" {
					t.Errorf("%s waits for %s to complete, whose restart policy is %q", name, dep, target.Restart)
				}
			default:
				t.Errorf("%s depends on %s with condition %q", name, dep, d.Condition)
			}
		}
	}
	for dep, cond := range map[[2]string]string{
		{"kafka-topics", "kafka"}:  types.ServiceConditionHealthy,
		{"mongo", "mongo-keyfile"}: types.ServiceConditionCompletedSuccessfully,
		{"mongo-init", "mongo"}:    types.ServiceConditionHealthy,
		{"grafana", "prometheus"}:  types.ServiceConditionHealthy,
	} {
		if got := p.Services[dep[0]].DependsOn[dep[1]].Condition; got != cond {
			t.Errorf("%s on %s: condition %q, want %q", dep[0], dep[1], got, cond)
		}
	}
}

// Only the gateway is published on all interfaces; Prometheus and Grafana
// are on the loopback; the rest stays on the compose network.
func TestComposePorts(t *testing.T) {
	p := mustLoadCompose(t)
	want := map[string]string{"gateway": ":8080:8080", "prometheus": "127.0.0.1:9090:9090", "grafana": "127.0.0.1:3000:3000"}
	for name, s := range p.Services {
		var got []string
		for _, port := range s.Ports {
			got = append(got, fmt.Sprintf("%s:%s:%d", port.HostIP, port.Published, port.Target))
		}
		if w, ok := want[name]; ok {
			if !slices.Equal(got, []string{w}) {
				t.Errorf("%s publishes %v, want %s", name, got, w)
			}
		} else if len(got) > 0 {
			t.Errorf("%s publishes %v; it should stay internal", name, got)
		}
	}
}

// The bind mounts name files of the repository, mounted where the tools
// look for them.
func TestComposeMounts(t *testing.T) {
	p := mustLoadCompose(t)
	mounts := map[string]string{}
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if !v.ReadOnly {
				t.Errorf("%s mounts %s writable", name, v.Source)
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts a missing %s", name, v.Source)
			}
			rel, err := filepath.Rel(root(t), v.Source)
			if err != nil {
				t.Fatal(err)
			}
			mounts[name+" "+filepath.ToSlash(rel)] = v.Target
		}
	}
	for k, target := range map[string]string{
		"prometheus deploy/prometheus":        "/etc/prometheus",
		"grafana deploy/grafana/provisioning": "/etc/grafana/provisioning",
		"grafana deploy/grafana/dashboards":   grafanaDashboardsDir,
		"mongo-init deploy/mongo":             "/deploy/mongo",
	} {
		if mounts[k] != target {
			t.Errorf("%s mounted at %q, want %q", k, mounts[k], target)
		}
	}
	if !slices.Contains(p.Services["prometheus"].Command, "--config.file=/etc/prometheus/prometheus.yml") {
		t.Errorf("prometheus command %v does not load the mounted configuration", p.Services["prometheus"].Command)
	}
	if home := env(p.Services["grafana"], "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"); home != grafanaDashboardsDir+"/rcm-overview.json" {
		t.Errorf("grafana home dashboard %q", home)
	}
	init := strings.Join(p.Services["mongo-init"].Command, "\n")
	if !strings.Contains(init, "--file /deploy/mongo/roles.js") || !strings.Contains(init, "rs.initiate") {
		t.Errorf("mongo-init does not initiate the replica set and run roles.js:\n%s", init)
	}
	mongo := p.Services["mongo"].Command
	for _, arg := range []string{"--replSet", "rs0", "--keyFile"} {
		if !slices.Contains(mongo, arg) {
			t.Errorf("mongo command %v lacks %s", mongo, arg)
		}
	}
}

// A missing secret or Clerk setting stops `docker compose` with a message
// that names it, instead of starting with an empty value.
func TestComposeRequiresSettings(t *testing.T) {
	for key := range composeEnv() {
		e := composeEnv()
		delete(e, key)
		_, err := loadCompose(t, e)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("without %s: err %v, want one naming it", key, err)
		}
	}
}

// .env.example lists every variable docker-compose.yml reads.
func TestEnvExample(t *testing.T) {
	example := string(readFile(t, ".env.example"))
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#? ?([A-Z][A-Z0-9_]*)=`).FindAllStringSubmatch(example, -1) {
		listed[m[1]] = true
	}
	compose := string(readFile(t, "docker-compose.yml"))
	for _, m := range regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*)`).FindAllStringSubmatch(compose, -1) {
		if !listed[m[1]] {
			t.Errorf("docker-compose.yml reads %s, which .env.example does not list", m[1])
		}
	}
}

// The scripts of the init jobs are valid bash once compose has interpolated
// them; the topics script, run against stand-ins of Kafka's tools, creates
// each topic with its partitions and settings.
func TestComposeInitScripts(t *testing.T) {
	p := mustLoadCompose(t)
	for _, name := range []string{"kafka-topics", "mongo-keyfile", "mongo-init"} {
		s := p.Services[name]
		if len(s.Entrypoint) == 0 || s.Entrypoint[0] != "/bin/bash" || len(s.Command) != 1 {
			t.Fatalf("%s: entrypoint %v command of %d parts: want bash running one script", name, s.Entrypoint, len(s.Command))
		}
		if out, err := exec.Command("bash", "-n", "-c", s.Command[0]).CombinedOutput(); err != nil {
			t.Errorf("%s script: %v\n%s", name, err, out)
		}
	}

	// Stand-ins that record their arguments, one call a line.
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	for _, tool := range []string{"kafka-topics.sh", "kafka-configs.sh"} {
		stub := fmt.Sprintf("#!/bin/sh\necho %s \"$@\" >> %s\n", tool, log)
		if err := os.WriteFile(filepath.Join(dir, tool), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := p.Services["kafka-topics"]
	script := strings.ReplaceAll(s.Command[0], "/opt/kafka/bin/", dir+"/")
	args := append(slices.Clone(s.Entrypoint[1:]), script)
	if out, err := exec.Command("bash", args...).CombinedOutput(); err != nil {
		t.Fatalf("kafka-topics script: %v\n%s", err, out)
	}
	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}

	created := map[string]int{}
	settings := map[string]map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
		f := strings.Fields(line)
		flag := func(name string) []string {
			var vals []string
			for i := 0; i+1 < len(f); i++ {
				if f[i] == name {
					vals = append(vals, f[i+1])
				}
			}
			return vals
		}
		switch {
		case f[0] == "kafka-topics.sh" && slices.Contains(f, "--create"):
			if !slices.Contains(f, "--if-not-exists") {
				t.Errorf("topic creation fails when the topic exists: %s", line)
			}
			topic := flag("--topic")[0]
			created[topic], _ = strconv.Atoi(flag("--partitions")[0])
			if rf := flag("--replication-factor"); len(rf) != 1 || rf[0] != "1" {
				t.Errorf("%s: replication factor %v on a one-broker cluster", topic, rf)
			}
			settings[topic] = map[string]string{}
			for _, c := range flag("--config") {
				k, v, _ := strings.Cut(c, "=")
				settings[topic][k] = v
			}
		case f[0] == "kafka-configs.sh":
			topic := flag("--entity-name")[0]
			var alter []string
			for k, v := range settings[topic] {
				alter = append(alter, k+"="+v)
			}
			got := strings.Split(flag("--add-config")[0], ",")
			if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(alter))) {
				t.Errorf("%s: created with %v, altered to %v", topic, alter, got)
			}
		}
	}
	if !maps.Equal(created, topics) {
		t.Errorf("topics created %v, want %v", created, topics)
	}
	for topic, want := range map[string]map[string]string{
		"rcm.campaign-events.v1":     {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"},
		"rcm.campaign-events.v1.dlq": {"retention.ms": "-1"},
		"rcm.activity.v1":            {"cleanup.policy": "delete"},
	} {
		for k, v := range want {
			if settings[topic][k] != v {
				t.Errorf("%s: %s=%q, want %q", topic, k, settings[topic][k], v)
			}
		}
	}
	for _, topic := range compacted {
		if got := settings[topic]["cleanup.policy"]; got != "compact" {
			t.Errorf("%s: cleanup.policy=%q, want compact: readers keep the latest value per key", topic, got)
		}
	}
	if ms, _ := strconv.ParseInt(settings["rcm.documents.v1.dlq"]["retention.ms"], 10, 64); ms < 30*24*3600*1000 {
		t.Errorf("rcm.documents.v1.dlq keeps records %dms; a dead-letter topic needs weeks at least", ms)
	}
}

// docs/production.md's topic table has a row for every topic, and the row
// of a compacted topic says so.
func TestProductionDocListsTopics(t *testing.T) {
	rows := map[string]string{}
	for _, line := range strings.Split(string(readFile(t, "docs", "production.md")), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 6 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		rows[strings.Trim(strings.TrimSpace(cells[1]), "`")] = line
	}
	for topic := range topics {
		if _, ok := rows[topic]; !ok {
			t.Errorf("docs/production.md has no row for the topic %s", topic)
		}
	}
	for _, topic := range compacted {
		if !strings.Contains(rows[topic], "`cleanup.policy=compact`") {
			t.Errorf("docs/production.md's row of %s does not say cleanup.policy=compact: %q", topic, rows[topic])
		}
	}
}
