package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/relay"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consentTopic is the consent topic on the tests' private brokers.
const consentTopic = "consent"

// TestConsentTopicMaterialises: opt-outs and consent changes, some at
// once, on several documents, through the use cases and the relay. Read
// from the beginning and kept at the highest version per key, the consent
// topic holds exactly the consent the API answers for every document;
// and no document's consent record is ahead of its events on the events
// topic.
func TestConsentTopicMaterialises(t *testing.T) {
	t.Parallel()
	broker := kafkatest.Restartable(t, kafkax.Topic{Name: topic, Partitions: 2}, kafkax.Topic{Name: consentTopic, Partitions: 2})
	s := newStore(t)
	rl := newRelay(relay.Config{Topic: topic, ConsentTopic: consentTopic}, newProducer(t, broker), s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Run(ctx, 2*time.Second) }()
	defer func() { cancel(); <-done }()

	gen := ids.NewGenerator(time.Now)
	uc := app.New(app.Config{Store: s, Relay: rl, NewID: gen.New, Now: time.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry()})
	p := principal.Principal{AccountID: "org_topic", UserID: "user_1", SessionID: "sess_1"}
	const docs = 4
	channels := []string{"sms", "email", "call", "all"}
	var wg sync.WaitGroup
	for d := range docs {
		documentID := fmt.Sprintf("doc_topic_%d", d)
		if err := uc.ApplyDocument(ctx, campaign.Document{ID: documentID, AccountID: p.AccountID, Loan: &campaign.Loan{Status: "BEHIND"}, Version: 1}); err != nil {
			t.Fatal(err)
		}
		ans, err := uc.Start(ctx, app.Request{Principal: p}, app.StartInput{DocumentID: documentID,
			StartInput: campaign.StartInput{SMS: true, Email: true, Call: true, Tone: "t", Cadence: "c"}})
		if err != nil || ans.Status != http.StatusCreated {
			t.Fatalf("start: %d %s %v", ans.Status, ans.Body, err)
		}
		id := campaignID(t, ans.Body)
		for i := range 2 + d {
			wg.Go(func() {
				in := app.OptOutInput{DocumentID: documentID, CampaignID: id, Channel: campaign.Channel(channels[(i+d)%3])}
				if _, err := uc.OptOut(ctx, app.Request{Principal: p}, in); err != nil {
					t.Error(err)
				}
			})
			wg.Go(func() {
				status := []string{events.ConsentGranted, events.ConsentRevoked}[(i+d)%2]
				in := app.ConsentInput{DocumentID: documentID, Channel: channels[(i*d)%4], Status: status, Basis: "test"}
				if _, err := uc.ChangeConsent(ctx, app.Request{Principal: p}, in); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := map[string]events.Consent{}
	for d := range docs {
		documentID := fmt.Sprintf("doc_topic_%d", d)
		st, err := uc.Consent(ctx, p, documentID)
		if err != nil {
			t.Fatal(err)
		}
		want[events.ConsentKey(p.AccountID, documentID)] = events.Consent{Channels: st.Channels, Version: st.Version}
	}
	waitEmpty(t, s, 30*time.Second)

	// Every event is on the events topic once the outbox is empty; the
	// highest version of each document there bounds its consent records.
	published := map[string]int64{}
	for _, r := range readAll(t, broker, topic) {
		e, err := kafkarec.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		if e.Consent != nil {
			key := events.ConsentKey(e.AccountID, e.DocumentID)
			published[key] = max(published[key], e.Consent.Version)
		}
	}
	got := map[string]events.ConsentRecord{}
	for _, r := range readAll(t, broker, consentTopic) {
		rec, err := kafkarec.DecodeConsent(r)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Version > published[rec.Key()] {
			t.Fatalf("%s: consent record at version %d, the events topic only reached %d", rec.Key(), rec.Version, published[rec.Key()])
		}
		if old, ok := got[rec.Key()]; !ok || rec.Supersedes(old) {
			got[rec.Key()] = rec
		}
	}
	if len(got) != len(want) {
		t.Fatalf("the topic holds %d documents, want %d", len(got), len(want))
	}
	for key, w := range want {
		if g := got[key]; g.Consent != w {
			t.Fatalf("%s: the topic materialises %+v, the API answers %+v", key, g.Consent, w)
		}
	}
}

// readAll reads topic from the beginning up to its end as it is now.
func readAll(t *testing.T, broker *kafkatest.Broker, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(broker.Client(t)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	cl := broker.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var out []*kgo.Record
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: partitions %v not read to their end", topic, left)
		}
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, r)
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return out
}

func campaignID(t *testing.T, body []byte) string {
	t.Helper()
	var v struct{ Campaign struct{ ID string } }
	if err := json.Unmarshal(body, &v); err != nil || v.Campaign.ID == "" {
		t.Fatalf("answer %s: %v", body, err)
	}
	return v.Campaign.ID
}
