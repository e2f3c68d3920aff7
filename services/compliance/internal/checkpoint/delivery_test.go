package checkpoint

import (
	"context"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestPublishedOnceTheBrokerIsBack: the broker is unreachable while an
// account's checkpoints are signed. Signing goes on (each entry is still
// covered within 2 s), the failed attempts are counted, and once the
// broker is back the latest checkpoint, with its cosignature, reaches
// rcm.compliance-checkpoints.v1 (key the account, text/plain) without
// the log growing again.
func TestPublishedOnceTheBrokerIsBack(t *testing.T) {
	t.Parallel()
	b := kafkatest.Restartable(t, kafkax.Topic{Name: Topic, Partitions: 1})
	// The service's producer options (service.Producer).
	producer := b.Client(t, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))
	b.Stop()
	r := newRig(t, func(o *rigOptions) { o.publish = Publisher(producer, Topic) })
	const account = "org_publish"
	evs := optOuts(t, account, 5)

	r.append(t, account, evs[:3])
	waitFor(t, 2*time.Second, "the checkpoint of 3 while the broker is down", func() bool { return r.latest(t, account).Size == 3 })
	r.append(t, account, evs[3:])
	waitFor(t, 2*time.Second, "the checkpoint of 5 while the broker is down", func() bool { return r.latest(t, account).Size == 5 })
	waitFor(t, 3*time.Second, "a failed publication counted", func() bool {
		return counter(t, r.reg, "rcm_log_checkpoint_publish_failures_total") >= 1
	})
	if got := counter(t, r.reg, "rcm_log_checkpoints_published_total"); got != 0 {
		t.Fatalf("published %v checkpoints with the broker down", got)
	}
	waitFor(t, 2*time.Second, "the cosignature of 5", func() bool { return len(r.latest(t, account).Cosignatures) == 1 })
	want := r.latest(t, account)

	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	consumer := b.Client(t, kgo.ConsumeTopics(Topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got *kgo.Record
	deadline := time.Now().Add(10 * time.Second)
	for got == nil && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := consumer.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(rec *kgo.Record) {
			if string(rec.Value) == string(want.Text()) {
				got = rec
			}
		})
	}
	if got == nil {
		t.Fatalf("the checkpoint of 5 was not published within 10 s of the broker's return:\n%s", want.Text())
	}
	t.Logf("published %v after the broker's return", time.Since(back))
	if string(got.Key) != account || len(got.Headers) != 1 || got.Headers[0].Key != "content-type" || string(got.Headers[0].Value) != "text/plain" {
		t.Errorf("published with key %q and headers %v, want key %s and content-type text/plain", got.Key, got.Headers, account)
	}
	if n := counter(t, r.reg, "rcm_log_checkpoints_signed_total"); n != 2 {
		t.Errorf("signed %v checkpoints, want 2", n)
	}
}

// TestWitnessBackCosignsTheLatest: a witness that cosigned a checkpoint
// is down when the next one is signed; once it is back, and without the
// log growing, the loop has it cosign that latest checkpoint from the
// size it holds: the cosignature is served with the checkpoint within a
// bounded time and published with it. The outage is counted once as a
// checkpoint the witness did not cosign, not once per retry.
func TestWitnessBackCosignsTheLatest(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const account = "org_witness_back"
	evs := optOuts(t, account, 6)
	r.append(t, account, evs[:3])
	waitFor(t, 2*time.Second, "the cosigned checkpoint of 3", func() bool {
		cp := r.latest(t, account)
		return cp.Size == 3 && len(cp.Cosignatures) == 1
	})

	r.witness.Stop()
	r.append(t, account, evs[3:])
	waitFor(t, 2*time.Second, "the checkpoint of 6", func() bool { return r.latest(t, account).Size == 6 })
	waitFor(t, 2*time.Second, "the witness's failure counted", func() bool {
		return counter(t, r.reg, "rcm_log_witness_rejections_total") == 1
	})
	if cp := r.latest(t, account); len(cp.Cosignatures) != 0 {
		t.Fatalf("the checkpoint of 6 is cosigned by a witness that is down: %q", cp.Cosignatures)
	}

	r.witness.Start()
	back := time.Now()
	waitFor(t, 3*time.Second, "the cosignature of 6 served with the checkpoint", func() bool {
		return len(r.latest(t, account).Cosignatures) == 1
	})
	t.Logf("cosigned %v after the witness's return", time.Since(back))
	cp := r.latest(t, account)
	if w := parseOne(t, "http://unused|"+r.witnessKey); !w.verifies(cp.Note, cp.Cosignatures[0]) {
		t.Fatalf("the cosignature %q does not verify with the witness key", cp.Cosignatures[0])
	}
	waitFor(t, 2*time.Second, "the cosigned checkpoint of 6 published", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.published) > 0 && r.published[len(r.published)-1] == string(cp.Text())
	})
	for name, want := range map[string]float64{
		"rcm_log_checkpoints_signed_total": 2, "rcm_log_cosignatures_total": 2, "rcm_log_witness_rejections_total": 1,
	} {
		if got := counter(t, r.reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
