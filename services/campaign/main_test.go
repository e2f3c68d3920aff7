package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/dev/testenv"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestRunInProcess starts run as main does, applies a document from the
// documents topic, starts a campaign on it and stops the service as
// SIGTERM does right after the answer: run returns, the documents group's
// offset is committed, and the campaign's event is on the events topic
// (the relay produced it and the producer was flushed before it closed).
func TestRunInProcess(t *testing.T) {
	t.Parallel()
	eventsTopic, documents, dlq := kafkatest.NewTopic(t, 2), kafkatest.NewTopic(t, 2), kafkatest.NewTopic(t, 1)
	group := "rcm-campaign-" + strings.ReplaceAll(documents, ".", "-")
	inst := servicetest.Start(t, "campaign", run, servicetest.Env(t, map[string]string{
		"RCM_EVENTS_TOPIC":        eventsTopic,
		"RCM_DOCUMENTS_TOPIC":     documents,
		"RCM_DOCUMENTS_DLQ_TOPIC": dlq,
		"RCM_DOCUMENTS_GROUP":     group,
		"RCM_KAFKA_PARTITIONS":    "2",
	}))
	cl := kafkatest.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	doc := []byte(`{"id":"doc_1","accountId":"org_a","loan":{"status":"BEHIND"},"version":1}`)
	if err := kafkax.ProduceAwaitGroup(ctx, cl, group, &kgo.Record{Topic: documents, Key: []byte("doc_1"), Value: doc}); err != nil {
		t.Fatal(err)
	}

	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"sms":true,"email":false,"call":false,"tone":"friendly","cadence":"weekly","notes":""}`
	answer := startSigned(t, signer, inst.URL, "doc_1", principal.Principal{AccountID: "org_a", UserID: "user_a", SessionID: "sess_1"}, body)
	var started struct{ Campaign struct{ ID string } }
	if err := json.Unmarshal(answer, &started); err != nil || started.Campaign.ID == "" {
		t.Fatalf("start: body %s: %v", answer, err)
	}
	inst.Stop()
	if msgs := inst.Logs.Messages(); msgs[len(msgs)-1] != "campaign stopped" {
		t.Fatalf("last log line %q, want %q", msgs[len(msgs)-1], "campaign stopped")
	}

	reader := kafkatest.Client(t, kgo.ConsumeTopics(eventsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	fetches := reader.PollFetches(ctx)
	if err := fetches.Err(); err != nil {
		t.Fatal(err)
	}
	var got []string
	fetches.EachRecord(func(r *kgo.Record) {
		var ev struct {
			EventType  string `json:"eventType"`
			CampaignID string `json:"campaignId"`
		}
		_ = json.Unmarshal(r.Value, &ev)
		got = append(got, ev.EventType+" "+ev.CampaignID)
	})
	if want := "campaign_started " + started.Campaign.ID; len(got) != 1 || got[0] != want {
		t.Fatalf("events topic holds %q, want [%q]", got, want)
	}
}

// TestRunCreatesTheConsentTopicCompacted: a service that creates its
// topics creates the consent and documents topics compacted, as the deploy
// files do: each holds the latest state per document, forever.
func TestRunCreatesTheConsentTopicCompacted(t *testing.T) {
	t.Parallel()
	consent, documents := kafkatest.FreshTopicName(t), kafkatest.FreshTopicName(t)
	inst := servicetest.Start(t, "campaign", run, servicetest.Env(t, map[string]string{
		"RCM_EVENTS_TOPIC":        kafkatest.NewTopic(t, 1),
		"RCM_DOCUMENTS_TOPIC":     documents,
		"RCM_DOCUMENTS_DLQ_TOPIC": kafkatest.NewTopic(t, 1),
		"RCM_CONSENT_TOPIC":       consent,
		"RCM_KAFKA_PARTITIONS":    "2",
	}))
	servicetest.Eventually(t, 20*time.Second, "the campaign service ready", func() bool {
		return slices.Contains(inst.Logs.Messages(), "campaign ready")
	})
	adm := kadm.NewClient(kafkatest.Client(t))
	for _, topic := range []string{consent, documents} {
		topics, err := adm.ListTopics(t.Context(), topic)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := topics[topic]; !ok || d.Err != nil || len(d.Partitions) != 2 {
			t.Fatalf("%s: got %+v, want a topic of 2 partitions", topic, d)
		}
		configs, err := adm.DescribeTopicConfigs(t.Context(), topic)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := configs.On(topic, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := "delete" // the broker's default
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				got = *c.Value
			}
		}
		if got != "compact" {
			t.Fatalf("%s: cleanup.policy=%s, want compact", topic, got)
		}
	}
}
