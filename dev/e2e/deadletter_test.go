package e2e

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestUnusableEventsAreDeadLettered: records on the event topic that are
// not valid events reach the dead-letter topic with a reason, from each
// consumer group, and the log goes on with the valid events after them.
func TestUnusableEventsAreDeadLettered(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	bad := []*kgo.Record{
		{Topic: events.Topic, Key: []byte(acct), Value: []byte(`{"eventType":"opt_out"`)},
		{Topic: events.Topic, Key: []byte(acct), Value: []byte(`{"eventType":"opt_out","eventId":"evt_x"}`), Headers: []kgo.RecordHeader{{Key: "ce_specversion", Value: []byte("1.0")}}},
		{Topic: events.Topic, Key: []byte(acct), Value: []byte(`{}`)},
	}
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{stk.KafkaAddr()}}, "e2e-dlq", prometheus.NewRegistry(), slog.New(slog.DiscardHandler),
		kgo.ConsumeTopics(events.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, bad...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	putDoc(t, "doc_dlq_"+acct, acct, "BEHIND", 1)
	startCampaign(t, tok, "doc_dlq_"+acct, startBody())
	if got := waitLog(t, tok, 1); len(got) != 1 || got[0].EventType != events.TypeCampaignStarted {
		t.Fatalf("got %v, want the one valid event", got)
	}
	parked := 0
	for parked < len(bad) {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("found %d dead letters of this account, want at least %d", parked, len(bad))
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Key) != acct {
				return
			}
			for _, h := range r.Headers {
				if h.Key == kafkax.HeaderDLQReason && len(h.Value) > 0 {
					parked++
				}
			}
		})
	}
}
