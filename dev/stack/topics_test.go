package stack

import (
	"io"
	"log/slog"
	"testing"

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
	want := map[string]string{events.Topic: "delete", events.ConsentTopic: "compact"}
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
