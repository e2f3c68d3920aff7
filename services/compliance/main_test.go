package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/dev/testenv"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kadm"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestRunInProcess starts run as main does, appends what the topic holds,
// and is stopped as SIGTERM stops it while more records arrive: run
// returns, and a second run finds every record appended exactly once and
// its group's offsets committed past all of them.
func TestRunInProcess(t *testing.T) {
	t.Parallel()
	topic, dlq := kafkatest.NewTopic(t, 2), kafkatest.NewTopic(t, 1)
	group := "rcm-compliance-" + strings.ReplaceAll(topic, ".", "-")
	vars := servicetest.Env(t, map[string]string{
		"RCM_EVENTS_TOPIC":     topic,
		"RCM_DLQ_TOPIC":        dlq,
		"RCM_COMPLIANCE_GROUP": group,
		"RCM_KAFKA_PARTITIONS": "2",
		"RCM_LOG_SIGNING_KEY":  testKey,
	})
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	gen := ids.NewGenerator(time.Now)
	records := servicetest.Records(t, topic,
		servicetest.Event(gen, "org_a", 0), servicetest.Event(gen, "org_a", 1), servicetest.Event(gen, "org_a", 2))
	more := servicetest.Records(t, topic,
		servicetest.Event(gen, "org_a", 3), servicetest.Event(gen, "org_a", 4), servicetest.Event(gen, "org_a", 5))
	producer := kafkatest.Client(t)
	entries := func(inst *servicetest.Instance) int {
		status, body := servicetest.Get(t, signer, inst.URL+"/v1/compliance-log?limit=100", "org_a")
		if status != http.StatusOK {
			t.Fatalf("compliance log: got %d %s, want 200", status, body)
		}
		var p struct{ Entries []json.RawMessage }
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		return len(p.Entries)
	}

	first := servicetest.Start(t, "compliance", run, vars)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkax.ProduceAwaitGroup(ctx, producer, group, records...); err != nil {
		t.Fatal(err)
	}
	if got := entries(first); got != 3 {
		t.Fatalf("got %d entries, want 3", got)
	}
	if err := producer.ProduceSync(ctx, more...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	first.Stop()
	if msgs := first.Logs.Messages(); msgs[len(msgs)-1] != "compliance stopped" {
		t.Fatalf("last log line %q, want %q", msgs[len(msgs)-1], "compliance stopped")
	}

	second := servicetest.Start(t, "compliance", run, vars)
	adm := kadm.NewClient(producer)
	servicetest.Eventually(t, 30*time.Second, "the group to commit past every record", func() bool {
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return false
		}
		sum := int64(0)
		offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		return sum == 6
	})
	if got := entries(second); got != 6 {
		t.Fatalf("after a restart: got %d entries, want 6, each once", got)
	}
}
