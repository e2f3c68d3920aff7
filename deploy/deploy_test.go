package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// root is the repository root (the tests run in deploy/).
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func readFile(t *testing.T, path ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{root(t)}, path...)...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// services are the four services, with the port each listens on.
var services = []struct {
	name string
	port int
}{
	{"gateway", 8080},
	{"campaign", 8081},
	{"compliance", 8082},
	{"feed", 8083},
}

// Topics and their partition counts, as the services expect them
// (RCM_KAFKA_PARTITIONS defaults to 6; dead-letter topics have one).
var topics = map[string]int{
	"rcm.campaign-events.v1":        6,
	"rcm.campaign-events.v1.dlq":    1,
	"documents.v1":                  6,
	"rcm.documents.v1.dlq":          1,
	"rcm.activity.v1":               6,
	"rcm.consent.v1":                6,
	"rcm.compliance-checkpoints.v1": 6,
}

// compacted are the topics that keep the latest value per key.
var compacted = []string{"documents.v1", "rcm.consent.v1"}

// Metrics the services expose, by family name. Histograms are also
// queried through their _bucket, _count and _sum series.
var (
	counters = []string{
		"rcm_http_requests_total",
		"rcm_outbox_publish_total",
		"rcm_outbox_queue_overflows_total",
		"rcm_outbox_swept_events_total",
		"rcm_compliance_appends_total",
		"rcm_compliance_dead_letters_total",
		"rcm_compliance_replays_total",
		"rcm_log_checkpoints_signed_total",
		"rcm_log_checkpoints_published_total",
		"rcm_log_checkpoint_publish_failures_total",
		"rcm_log_cosignatures_total",
		"rcm_log_witness_rejections_total",
		"rcm_log_consistency_failures_total",
		"rcm_feed_deliveries_total",
		"rcm_feed_dropped_subscribers_total",
		"rcm_feed_items_stored_total",
		"rcm_feed_items_replayed_total",
		"rcm_feed_dead_letters_total",
		"rcm_feed_hub_items_total",
		"rcm_documents_messages_total",
		"rcm_campaigns_ended_total",
		"rcm_contact_decisions_total",
		"rcm_auth_failures_total",
		"rcm_auth_jwks_refreshes_total",
		"rcm_kafka_connects_total",
		"rcm_kafka_connect_errors_total",
		"rcm_kafka_disconnects_total",
		"rcm_kafka_write_bytes_total",
		"rcm_kafka_write_errors_total",
		"rcm_kafka_read_bytes_total",
		"rcm_kafka_read_errors_total",
		"rcm_kafka_produce_bytes_total",
		"rcm_kafka_produce_compressed_bytes_total",
		"rcm_kafka_produce_batches_total",
		"rcm_kafka_produce_records_total",
		"rcm_kafka_fetch_bytes_total",
		"rcm_kafka_fetch_compressed_bytes_total",
		"rcm_kafka_fetch_batches_total",
		"rcm_kafka_fetch_records_total",
		"rcm_kafka_requests_total",
	}
	gauges = []string{
		"rcm_http_requests_in_flight",
		"rcm_outbox_pending_events",
		"rcm_outbox_oldest_event_age_seconds",
		"rcm_feed_subscribers",
		"rcm_feed_streams_open",
		"rcm_kafka_consumer_lag",
		"go_goroutines",
		"go_memstats_heap_inuse_bytes",
		"process_resident_memory_bytes",
		"process_cpu_seconds_total",
		"up",
	}
	histograms = []string{
		"rcm_http_request_duration_seconds",
		"rcm_outbox_publish_duration_seconds",
		"rcm_compliance_append_batch_duration_seconds",
		"rcm_compliance_event_to_appended_seconds",
		"rcm_log_proof_duration_seconds",
		"rcm_feed_delivery_latency_seconds",
		"rcm_mongodb_command_duration_seconds",
		"rcm_kafka_request_duration_e2e_seconds",
		"rcm_kafka_write_wait_seconds",
		"rcm_kafka_write_time_seconds",
		"rcm_kafka_read_wait_seconds",
		"rcm_kafka_read_time_seconds",
	}
)

// knownSeries is every series name a query may select.
func knownSeries() map[string]bool {
	known := map[string]bool{"ALERTS": true}
	for _, n := range append(append([]string{}, counters...), gauges...) {
		known[n] = true
	}
	for _, n := range histograms {
		for _, s := range []string{"_bucket", "_count", "_sum"} {
			known[n+s] = true
		}
	}
	return known
}

// seriesNames are the names of the platform's series a PromQL expression
// selects (rcm_*, go_*, process_*). Label values never match: topic and
// group names use dots and dashes.
var seriesName = regexp.MustCompile(`\b(?:rcm|go|process)_[a-zA-Z0-9_]+\b`)

func unknownSeries(expr string) []string {
	known := knownSeries()
	var out []string
	for _, n := range seriesName.FindAllString(expr, -1) {
		if !known[n] {
			out = append(out, n)
		}
	}
	return out
}

var (
	promtoolOnce sync.Once
	promtoolPath string
	promtoolErr  string
)

// promtool runs deploy/prometheus/check.sh once (it installs promtool when
// it is missing and checks the config, the rules and their tests) and
// returns the promtool it used. The test fails if check.sh does.
func promtool(t *testing.T) string {
	t.Helper()
	promtoolOnce.Do(func() {
		cmd := exec.Command("bash", filepath.Join(root(t), "deploy", "prometheus", "check.sh"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			promtoolErr = "deploy/prometheus/check.sh failed (" + err.Error() + "):\n" + string(out)
			return
		}
		promtoolPath = os.Getenv("PROMTOOL")
		if promtoolPath == "" {
			if promtoolPath, err = exec.LookPath("promtool"); err != nil {
				promtoolErr = "promtool is not on PATH after check.sh: " + err.Error()
			}
		}
	})
	if promtoolErr != "" {
		t.Fatal(promtoolErr)
	}
	return promtoolPath
}

func indent(s string) string {
	return "\t" + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n\t")
}
