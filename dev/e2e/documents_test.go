package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMalformedDocumentsGoToTheDeadLetterTopic: a documents.v1 message
// that does not match its schema is parked on rcm.documents.v1.dlq with
// the reason, and the read model moves on to the next message.
func TestMalformedDocumentsGoToTheDeadLetterTopic(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	bad := []*kgo.Record{
		{Topic: stack.DocumentsTopic, Key: []byte("doc_bad1_" + acct), Value: []byte(`not json`)},
		{Topic: stack.DocumentsTopic, Key: []byte("doc_bad2_" + acct), Value: []byte(`{"id":"doc_bad2_` + acct + `","accountId":"` + acct + `","loan":{"status":"BEHIND"}}`)},
		{Topic: stack.DocumentsTopic, Key: []byte("doc_bad3_" + acct), Value: []byte(`{"id":"someone_else","accountId":"` + acct + `","loan":null,"version":1}`)},
	}
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{stk.KafkaAddr()}}, "e2e-documents", prometheus.NewRegistry(), slog.New(slog.DiscardHandler),
		kgo.ConsumeTopics("rcm.documents.v1.dlq"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafkax.ProduceAwaitGroup(ctx, cl, stack.DocumentsGroup, bad...); err != nil {
		t.Fatal(err)
	}
	// The consumer moved past them: a valid document behind them applies.
	putDoc(t, "doc_good_"+acct, acct, "BEHIND", 1)
	startCampaign(t, token(t, acct), "doc_good_"+acct, startBody())
	// The malformed ones were not applied.
	call(t, "POST", "/v1/documents/doc_bad2_"+acct+"/rcm", token(t, acct), startBody()).wantError(t, http.StatusNotFound, notFound)

	reasons := map[string]string{}
	for len(reasons) < len(bad) {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("dead letters found: %v, want %d", reasons, len(bad))
		}
		fetches.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == "rcm_dlq_reason" {
					reasons[string(r.Key)] = string(h.Value)
				}
			}
		})
		for k := range reasons {
			found := false
			for _, b := range bad {
				found = found || string(b.Key) == k
			}
			if !found {
				delete(reasons, k) // another test's dead letter
			}
		}
	}
	for k, reason := range reasons {
		if reason == "" {
			t.Errorf("%s: empty reason", k)
		}
	}
}
