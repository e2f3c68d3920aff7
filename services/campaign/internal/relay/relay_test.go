package relay_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/relay"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

func TestMain(m *testing.M) {
	code := m.Run()
	mongotest.Close()
	kafkatest.Close()
	os.Exit(code)
}

var (
	gen    = ids.NewGenerator(time.Now)
	user   = events.Actor{Type: events.ActorUser, ID: "user_1", SessionID: "sess_1"}
	logger = slog.New(slog.NewTextHandler(io.Discard, nil))
)

func newStore(t testing.TB) *store.Store {
	t.Helper()
	s := store.New(mongotest.Client(t).Database(mongotest.NewDatabase(t)))
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// leave writes n campaigns of one account, each with its campaign_started
// event in the outbox, as a process that could not publish leaves them;
// it returns the event ids in the order they were written.
func leave(t testing.TB, s *store.Store, account string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	var g errgroup.Group
	g.SetLimit(4)
	for i := range n {
		// A hundred campaigns a document, as on real documents.
		doc := campaign.Document{ID: fmt.Sprintf("doc_%s_%d", account, i/100), AccountID: account, Loan: &campaign.Loan{Status: "BEHIND"}, Version: 1}
		c, e, err := campaign.Start(campaign.StartInput{SMS: true, Tone: "t", Cadence: "c"}, doc, user, gen.New, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = e.EventID
		g.Go(func() error {
			_, _, err := s.Create(context.Background(), c, e)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// consume reads topic from the start until it holds n records, and
// returns their event ids in the order of the log.
func consume(t testing.TB, broker *kafkatest.Broker, topic string, n int, within time.Duration) []string {
	t.Helper()
	var ids []string
	for _, r := range consumeRecords(t, broker, topic, n, within) {
		ids = append(ids, r.id)
	}
	return ids
}

// record is a published event: its id and the account it is keyed by.
type record struct{ id, account string }

// consumeRecords reads topic from the start until it holds n records,
// and returns them in the order of the log (of each partition).
func consumeRecords(t testing.TB, broker *kafkatest.Broker, topic string, n int, within time.Duration) []record {
	t.Helper()
	cl := broker.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var got []record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("the topic holds %d events after %v, want %d", len(got), within, n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == kafkarec.HeaderID {
					got = append(got, record{id: string(h.Value), account: string(r.Key)})
				}
			}
		})
	}
	return got
}

// waitEmpty polls until the outboxes are empty.
func waitEmpty(t testing.TB, s *store.Store, within time.Duration) {
	t.Helper()
	waitEmptyEvery(t, s, within, 50*time.Millisecond)
}

// waitEmptyEvery is waitEmpty polling every interval: each poll reads
// every pending event.
func waitEmptyEvery(t testing.TB, s *store.Store, within, interval time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		pending, err := s.Pending(context.Background())
		if err == nil && len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still in the outbox after %v (%v)", len(pending), within, err)
		}
		time.Sleep(interval)
	}
}

// topic is the events topic on the tests' private brokers.
const topic = "campaign-events"

// newBroker starts a private broker with the events topic in partitions
// partitions.
func newBroker(t testing.TB, partitions int32) *kafkatest.Broker {
	t.Helper()
	return kafkatest.Restartable(t, kafkax.Topic{Name: topic, Partitions: partitions})
}

// newProducer returns a client of broker producing as the service's relay
// does, with opts after.
func newProducer(t testing.TB, broker *kafkatest.Broker, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return broker.Client(t, append([]kgo.Opt{kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0)}, opts...)...)
}

func newRelay(cfg relay.Config, producer *kgo.Client, s *store.Store) *relay.Relay {
	rl, _ := newObservedRelay(cfg, producer, s)
	return rl
}

// removeAtOnce is cfg with the relay removing published events at once,
// unless cfg says otherwise: the tests of the relay's own removal wait
// for no later write of the record to take them out.
func removeAtOnce(cfg relay.Config) relay.Config {
	if cfg.RemoveAfter == 0 {
		cfg.RemoveAfter = time.Millisecond
	}
	return cfg
}

// TestStartAfterOutageLargerThanQueue: a previous process left more events
// than the relay's queue holds while the broker was down. Start-up gets
// ready in bounded time, and once the broker is back every event is
// published, the ones left first and in order, before a new command's.
func TestStartAfterOutageLargerThanQueue(t *testing.T) {
	t.Parallel()
	const left = 200
	broker := newBroker(t, 1)
	s := newStore(t)
	want := leave(t, s, "org_outage", left)
	broker.Stop()

	producer := newProducer(t, broker)
	rl := newRelay(relay.Config{Topic: topic, QueueSize: 16, SweepCheck: 100 * time.Millisecond}, producer, s)
	ctx, cancel := context.WithCancel(context.Background())
	ready, readyCancel := context.WithTimeout(ctx, 10*time.Second)
	defer readyCancel()
	if err := rl.Sweep(ready, 0); err != nil {
		t.Fatalf("start-up sweep of %d events with a queue of 16: %v", left, err)
	}
	done := make(chan error, 1)
	go func() { done <- rl.Run(ctx, 2*time.Second) }()
	defer func() { cancel(); <-done }()

	// A command accepted once ready, while the broker is still down.
	doc := campaign.Document{ID: "doc_new", AccountID: "org_outage", Loan: &campaign.Loan{Status: "BEHIND"}, Version: 1}
	c, e, err := campaign.Start(campaign.StartInput{Email: true, Tone: "t", Cadence: "c"}, doc, user, gen.New, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, msg, err := s.Create(ctx, c, e)
	if err != nil {
		t.Fatal(err)
	}
	rl.Enqueue(c.DocumentID, msg)
	want = append(want, msg.ID)

	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	got := consume(t, broker, topic, len(want), time.Minute)
	if !slices.Equal(dedupe(got), want) {
		t.Fatalf("published %d events (%d distinct), want the %d left in order, then the new one", len(got), len(dedupe(got)), len(want))
	}
	waitEmpty(t, s, 30*time.Second)
}

// dedupe keeps the first of each id: delivery is at least once.
func dedupe(ids []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// TestShutdownWithBrokerDown: with the broker down and more events than
// the producer may buffer, the relay stops within its drain time.
func TestShutdownWithBrokerDown(t *testing.T) {
	t.Parallel()
	broker := newBroker(t, 1)
	s := newStore(t)
	leave(t, s, "org_down", 40)
	broker.Stop()

	producer := newProducer(t, broker, kgo.MaxBufferedRecords(4))
	rl := newRelay(relay.Config{Topic: topic, QueueSize: 16}, producer, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Run(ctx, 500*time.Millisecond) }()
	sweepCtx, sweepCancel := context.WithTimeout(ctx, 5*time.Second)
	defer sweepCancel()
	_ = rl.Sweep(sweepCtx, 0)
	// Let the relay get stuck on the full producer buffer.
	for i := range 40 {
		rl.Enqueue("rcm_x"+strconv.Itoa(i), events.Message{ID: fmt.Sprintf("evt_%026d", i), Type: events.TypeCampaignStarted, AccountID: "org_down", Data: []byte("{}")})
	}
	cancel()
	const bound = 3 * time.Second // the drain time, and slack for a loaded machine
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatalf("the relay did not stop within %v of shutdown with the broker down", bound)
	}
}
