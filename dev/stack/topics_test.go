package stack

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"
	_ "time/tzdata" // the answer must not depend on the host

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestKafkaTopics starts the stack's broker alone and reads back the
// topics it created: rcm.consent.v1 is compacted, the event topic is not.
func TestKafkaTopics(t *testing.T) {
	s := &Stack{cfg: Config{DataDir: t.TempDir(), Partitions: 2, Logs: io.Discard}, logger: slog.New(slog.DiscardHandler)}
	if err := s.StartKafka(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.StopKafka)
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{s.KafkaAddr()}}, "topics-test", prometheus.NewRegistry(), s.logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	want := map[string]string{events.Topic: "delete", events.ConsentTopic: "compact", DocumentsTopic: "compact"}
	var names []string
	for name := range want {
		names = append(names, name)
	}
	details, err := adm.ListTopics(t.Context(), names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if d, ok := details[name]; !ok || d.Err != nil || len(d.Partitions) != 2 {
			t.Errorf("%s: got %+v, want a topic of 2 partitions", name, d)
		}
	}
	configs, err := adm.DescribeTopicConfigs(t.Context(), names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range configs {
		if rc.Err != nil {
			t.Fatalf("%s: %v", rc.Name, rc.Err)
		}
		got := "delete" // the broker's default
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				got = *c.Value
			}
		}
		if got != want[rc.Name] {
			t.Errorf("%s: cleanup.policy=%s, want %s", rc.Name, got, want[rc.Name])
		}
		delete(want, rc.Name)
	}
	if len(want) != 0 {
		t.Errorf("no configs of %v", want)
	}
}

// TestDemoDocuments: every seeded document is a valid documents.v1 value
// whose borrower has a time zone of the database.
func TestDemoDocuments(t *testing.T) {
	ma := false
	for _, d := range DemoDocuments() {
		raw, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := events.Validate(events.SchemaDocument, raw); err != nil {
			t.Errorf("%s: %v", d.ID, err)
		}
		if d.Borrower == nil {
			t.Errorf("%s: no borrower", d.ID)
			continue
		}
		if _, err := time.LoadLocation(d.Borrower.TimeZone); err != nil {
			t.Errorf("%s: %v", d.ID, err)
		}
		ma = ma || (d.Borrower.State == "MA" && d.Loan != nil && d.Loan.Status == "BEHIND")
	}
	if !ma {
		t.Error("no BEHIND document of an MA borrower to show the state rule pack")
	}
}
