package relay_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/relay"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// quiet keeps the relay's own sweeps out of a test that sweeps by hand.
const quiet = time.Hour

// newObservedRelay is newRelay with the registry its metrics are on,
// wired to s as the service wires them: the store's writes take
// published events out of the outbox.
func newObservedRelay(cfg relay.Config, producer *kgo.Client, s *store.Store) (*relay.Relay, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	rl := relay.New(removeAtOnce(cfg), producer, s, reg, logger, time.Now)
	s.TakeOutPublished(rl)
	return rl, reg
}

// value reads the counter (or gauge) name with the label pairs labels from reg.
func value(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// published is rcm_outbox_publish_total{outcome}.
func published(t testing.TB, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	return value(t, reg, "rcm_outbox_publish_total", "outcome", outcome)
}

// eventually polls cond until it holds, failing after within.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pendingIDs returns the ids of the events in the outboxes, in id order.
func pendingIDs(t testing.TB, s *store.Store) []string {
	t.Helper()
	pending, err := s.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return idsOf(pending)
}

// enqueue hands the relay the pending events, in order, as the request
// path does.
func enqueue(rl *relay.Relay, pending []store.Pending) {
	for _, p := range pending {
		rl.Enqueue(p.DocumentID, p.Message)
	}
}

func idsOf(pending []store.Pending) []string {
	ids := make([]string, len(pending))
	for i, p := range pending {
		ids[i] = p.ID
	}
	return ids
}

// written leaves n events of account in the outbox and returns them as
// the store holds them, in the order they were written.
func written(t testing.TB, s *store.Store, account string, n int) []store.Pending {
	t.Helper()
	want := leave(t, s, account, n)
	pending, err := s.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pending = slices.DeleteFunc(pending, func(p store.Pending) bool { return !slices.Contains(want, p.ID) })
	if !slices.Equal(idsOf(pending), want) {
		t.Fatalf("the outbox holds %d of the %d events written, or not in their order", len(pending), n)
	}
	return pending
}

// running is a relay's Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
	bound  time.Duration
	once   sync.Once
}

// run starts rl with drain; stop fails the test when Run takes longer
// than bound to return after shutdown.
func run(t testing.TB, rl *relay.Relay, drain, bound time.Duration) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), bound: bound}
	go func() { r.done <- rl.Run(ctx, drain) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop shuts the relay down and waits for Run to return.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	r.wait(t)
}

// wait waits for Run to return after shutdown.
func (r *running) wait(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("relay: %v", err)
			}
		case <-time.After(r.bound):
			t.Errorf("the relay did not stop within %v of shutdown", r.bound)
		}
	})
}

// onTopic counts the records on topic.
func onTopic(t testing.TB, broker *kafkatest.Broker, topic string) int64 {
	t.Helper()
	ends, err := kadm.NewClient(broker.Client(t)).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// TestOverflowIsPublishedBySweep: a burst larger than the queue leaves the
// extra events in the outbox; the relay notices at its next check, sweeps
// and publishes every event exactly once, and counts the overflow.
func TestOverflowIsPublishedBySweep(t *testing.T) {
	t.Parallel()
	const n, queue = 60, 8
	broker := newBroker(t, 1)
	s := newStore(t)
	burst := written(t, s, "org_burst", n)

	producer := newProducer(t, broker)
	rl, reg := newObservedRelay(relay.Config{Topic: topic, QueueSize: queue, SweepCheck: 50 * time.Millisecond}, producer, s)
	// The burst arrives before the relay takes anything off its queue.
	enqueue(rl, burst)
	if got := value(t, reg, "rcm_outbox_queue_overflows_total"); got != n-queue {
		t.Fatalf("overflows counted: %v, want %d", got, n-queue)
	}
	if got := pendingIDs(t, s); !slices.Equal(got, idsOf(burst)) {
		t.Fatalf("the outbox holds %d events after the overflow, want all %d", len(got), n)
	}

	relaying := run(t, rl, 2*time.Second, 5*time.Second)
	waitEmpty(t, s, 30*time.Second)
	relaying.stop(t) // everything produced is acknowledged once Run returned

	if got := onTopic(t, broker, topic); got != n {
		t.Fatalf("the topic holds %d records, want each of the %d events once", got, n)
	}
	got := consume(t, broker, topic, n, 30*time.Second)
	if d := dedupe(got); len(d) != n || !sameSet(d, idsOf(burst)) {
		t.Fatalf("published %d distinct of %d records, want the %d events of the burst", len(d), len(got), n)
	}
	if ok := published(t, reg, "ok"); ok != n {
		t.Fatalf("rcm_outbox_publish_total{outcome=ok} = %v, want %d", ok, n)
	}
	if swept := value(t, reg, "rcm_outbox_swept_events_total"); swept != n-queue {
		t.Fatalf("swept %v events, want the %d that overflowed", swept, n-queue)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestFailedPublishIsSweptOnceFixed: a produce the broker refuses is
// counted as an error, the event stays in the outbox, and a later sweep
// publishes it once the cause is gone.
func TestFailedPublishIsSweptOnceFixed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		topics []kafkax.Topic // what the broker starts with
		remedy func(ctx context.Context, adm *kadm.Client) error
	}{{
		// The broker creates no topic on demand.
		name: "topic missing",
		remedy: func(ctx context.Context, adm *kadm.Client) error {
			res, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
			if err == nil {
				err = res.Err
			}
			return err
		},
	}, {
		name:   "record larger than the topic allows",
		topics: []kafkax.Topic{{Name: topic, Partitions: 1, Configs: map[string]*string{"max.message.bytes": kadm.StringPtr("64")}}},
		remedy: func(ctx context.Context, adm *kadm.Client) error {
			res, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("1048588")}}, topic)
			if err == nil {
				_, err = res.On(topic, nil)
			}
			return err
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 10
			broker := kafkatest.Restartable(t, tc.topics...)
			s := newStore(t)
			evs := written(t, s, "org_refused", n)

			producer := newProducer(t, broker)
			rl, reg := newObservedRelay(relay.Config{Topic: topic, SweepCheck: 50 * time.Millisecond}, producer, s)
			run(t, rl, 2*time.Second, 5*time.Second)
			enqueue(rl, evs)

			// Every event fails at least once and is swept again.
			eventually(t, 30*time.Second, "not every event's publish failed", func() bool {
				return published(t, reg, "error") >= n
			})
			eventually(t, 10*time.Second, "the failed events were not swept again", func() bool {
				return value(t, reg, "rcm_outbox_swept_events_total") >= n
			})
			if ok := published(t, reg, "ok"); ok != 0 {
				t.Fatalf("%v events published while the broker refuses them", ok)
			}
			if got := pendingIDs(t, s); !slices.Equal(got, idsOf(evs)) {
				t.Fatalf("the outbox holds %d events after failed publishes, want all %d", len(got), n)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tc.remedy(ctx, kadm.NewClient(broker.Client(t))); err != nil {
				t.Fatal(err)
			}
			waitEmpty(t, s, 30*time.Second)
			got := consume(t, broker, topic, n, 30*time.Second)
			if !sameSet(dedupe(got), idsOf(evs)) {
				t.Fatalf("published %v, want the %d events", dedupe(got), n)
			}
			if ok := published(t, reg, "ok"); ok < n {
				t.Fatalf("rcm_outbox_publish_total{outcome=ok} = %v, want at least %d", ok, n)
			}
		})
	}
}

// ackGate is the network between a producer and the broker, able to hold
// the broker's answers: requests still reach the broker, which appends
// the records, but their acknowledgements wait until release.
type ackGate struct {
	mu   sync.Mutex
	open chan struct{} // closed while answers pass
}

func newAckGate() *ackGate {
	g := &ackGate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *ackGate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func (g *ackGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *ackGate) wait(closed <-chan struct{}) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
	case <-closed:
	}
}

// dial is a kgo.Dialer.
func (g *ackGate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, gate: g, closed: make(chan struct{})}, nil
}

type gatedConn struct {
	net.Conn
	gate   *ackGate
	once   sync.Once
	closed chan struct{}
}

// Read holds what arrived while the gate is held, also what a read
// already waiting receives.
func (c *gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.gate.wait(c.closed)
	return n, err
}

func (c *gatedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// TestShutdownWithAcksInFlight: shutdown comes while the broker has
// records whose acknowledgements have not arrived. The relay stops within
// its drain time; what was acknowledged is gone from the outbox, what was
// not is still there, and the next relay publishes it: every event is on
// the topic at least once, in order of first appearance.
func TestShutdownWithAcksInFlight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// released says whether the held acknowledgements arrive
		// within the drain time.
		released bool
		drain    time.Duration
	}{
		{name: "acks arrive within the drain", released: true, drain: 5 * time.Second},
		{name: "acks held past the drain", released: false, drain: 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 40
			drain := tc.drain
			broker := newBroker(t, 1)
			s := newStore(t)
			all := written(t, s, "org_inflight", 2*n)
			acked, held := all[:n], all[n:]

			gate := newAckGate()
			producer := newProducer(t, broker, kgo.Dialer(gate.dial))
			rl, reg := newObservedRelay(relay.Config{Topic: topic, SweepInterval: quiet, SweepCheck: quiet}, producer, s)
			relaying := run(t, rl, drain, drain+3*time.Second)

			enqueue(rl, acked)
			eventually(t, 30*time.Second, "the first events were not acknowledged and removed", func() bool {
				return slices.Equal(pendingIDs(t, s), idsOf(held))
			})

			gate.hold()
			enqueue(rl, held)
			// The broker appended some of them: their acknowledgement
			// is on its way.
			eventually(t, 10*time.Second, "no record of the held events reached the broker", func() bool {
				return onTopic(t, broker, topic) > n
			})
			if tc.released {
				// Shutdown begins, then the acknowledgements arrive.
				relaying.cancel()
				gate.release()
				relaying.wait(t)
				if got := pendingIDs(t, s); len(got) != 0 {
					t.Fatalf("%d events still in the outbox, want none: all were acknowledged within the drain", len(got))
				}
				if ok := published(t, reg, "ok"); ok != 2*n {
					t.Fatalf("rcm_outbox_publish_total{outcome=ok} = %v, want %d", ok, 2*n)
				}
				return
			}
			relaying.stop(t)
			if got := pendingIDs(t, s); !slices.Equal(got, idsOf(held)) {
				t.Fatalf("the outbox holds %d events after shutdown, want the %d unacknowledged", len(got), n)
			}
			if ok := published(t, reg, "ok"); ok != n {
				t.Fatalf("rcm_outbox_publish_total{outcome=ok} = %v, want the %d acknowledged", ok, n)
			}
			producer.Close() // as the service does after the relay stopped

			// The next start publishes the rest.
			next, _ := newObservedRelay(relay.Config{Topic: topic}, newProducer(t, broker), s)
			if err := next.Sweep(context.Background(), 0); err != nil {
				t.Fatal(err)
			}
			run(t, next, drain, drain+3*time.Second)
			waitEmpty(t, s, 30*time.Second)
			records := int(onTopic(t, broker, topic))
			got := consume(t, broker, topic, records, 30*time.Second)
			if !slices.Equal(dedupe(got), idsOf(all)) {
				t.Fatalf("the topic holds %d distinct events of %d records, want all %d in order", len(dedupe(got)), len(got), 2*n)
			}
		})
	}
}

// removalDuringRead is the store with a sweep's read that returns only
// once an acknowledged event was removed from the outbox: the read saw
// the event, which is gone by the time the sweep claims what it read.
type removalDuringRead struct {
	*store.Store
	removed chan struct{}
	once    sync.Once
}

func (o *removalDuringRead) Pending(ctx context.Context) ([]store.Pending, error) {
	pending, err := o.Store.Pending(ctx)
	select {
	case <-o.removed:
	case <-ctx.Done():
	}
	return pending, err
}

func (o *removalDuringRead) RemoveFromOutboxes(ctx context.Context, batch map[string][]events.Message) error {
	err := o.Store.RemoveFromOutboxes(ctx, batch)
	if err == nil {
		o.once.Do(func() { close(o.removed) })
	}
	return err
}

// TestSweepSkipsWhatWasRemovedDuringItsRead: a sweep reads the outbox
// while an event is on its way, and the event is acknowledged and removed
// before the sweep claims what it read. The sweep must not publish it
// again.
func TestSweepSkipsWhatWasRemovedDuringItsRead(t *testing.T) {
	t.Parallel()
	broker := newBroker(t, 1)
	s := newStore(t)
	ev := written(t, s, "org_race", 1)
	outbox := &removalDuringRead{Store: s, removed: make(chan struct{})}

	producer := newProducer(t, broker)
	rl := relay.New(removeAtOnce(relay.Config{Topic: topic, SweepInterval: quiet, SweepCheck: quiet}), producer, outbox, prometheus.NewRegistry(), logger, time.Now)
	s.TakeOutPublished(rl)
	enqueue(rl, ev) // on its way before the sweep reads
	swept := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		swept <- rl.Sweep(ctx, 0)
	}()
	relaying := run(t, rl, 2*time.Second, 5*time.Second)
	if err := <-swept; err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, s, 30*time.Second)
	relaying.stop(t)
	if got := onTopic(t, broker, topic); got != 1 {
		t.Fatalf("the topic holds %d records of the one event: the sweep republished what was removed while it read", got)
	}
}

// of returns the ids of the records of account, in the order of the log.
func of(records []record, account string) []string {
	var ids []string
	for _, r := range records {
		if r.account == account {
			ids = append(ids, r.id)
		}
	}
	return ids
}

// subsequence reports whether want appear in got in their order.
func subsequence(got, want []string) bool {
	i := 0
	for _, id := range got {
		if i < len(want) && id == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestOrderPerAccount: an account's events handed to the relay in order
// come out in that order on their partition. After an overflow the order
// is not guaranteed (see the README, "Relay ordering under overflow"):
// events handed over after the overflow may be published before the
// overflowed ones, which wait for a sweep. What holds then: every event is
// published, those that went through the queue keep their order, and
// those the sweep found keep theirs.
func TestOrderPerAccount(t *testing.T) {
	t.Parallel()
	t.Run("in order", func(t *testing.T) {
		t.Parallel()
		const n = 30
		broker := newBroker(t, 3)
		s := newStore(t)
		a, b := written(t, s, "org_a", n), written(t, s, "org_b", n)
		producer := newProducer(t, broker)
		rl, _ := newObservedRelay(relay.Config{Topic: topic, SweepInterval: quiet, SweepCheck: quiet}, producer, s)
		run(t, rl, 2*time.Second, 5*time.Second)
		for i := range n {
			enqueue(rl, a[i:i+1])
			enqueue(rl, b[i:i+1])
		}
		got := consumeRecords(t, broker, topic, 2*n, 30*time.Second)
		for account, want := range map[string][]store.Pending{"org_a": a, "org_b": b} {
			if !slices.Equal(of(got, account), idsOf(want)) {
				t.Errorf("%s: published %d events, want its %d in the order handed over", account, len(of(got, account)), n)
			}
		}
	})
	t.Run("after an overflow", func(t *testing.T) {
		t.Parallel()
		const n, queue = 20, 8
		broker := newBroker(t, 3)
		s := newStore(t)
		burst := written(t, s, "org_a", n)
		queued, overflowed := burst[:queue], burst[queue:]
		producer := newProducer(t, broker)
		// The sweep comes when the test calls it, after a later event.
		rl, reg := newObservedRelay(relay.Config{Topic: topic, QueueSize: queue, SweepInterval: quiet, SweepCheck: quiet}, producer, s)
		enqueue(rl, burst)
		if got := value(t, reg, "rcm_outbox_queue_overflows_total"); got != n-queue {
			t.Fatalf("overflows counted: %v, want %d", got, n-queue)
		}
		relaying := run(t, rl, 2*time.Second, 5*time.Second)
		eventually(t, 30*time.Second, "the queued events were not published", func() bool {
			return slices.Equal(pendingIDs(t, s), idsOf(overflowed))
		})
		later := written(t, s, "org_a", 1)
		enqueue(rl, later)
		eventually(t, 30*time.Second, "the later event was not published", func() bool {
			return slices.Equal(pendingIDs(t, s), idsOf(overflowed))
		})
		if err := rl.Sweep(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		waitEmpty(t, s, 30*time.Second)
		relaying.stop(t)

		got := of(consumeRecords(t, broker, topic, n+1, 30*time.Second), "org_a")
		if all := append(idsOf(burst), idsOf(later)...); len(got) != len(all) || !sameSet(got, all) {
			t.Fatalf("published %d records, want each of the %d events once", len(got), len(all))
		}
		if !subsequence(got, append(idsOf(queued), idsOf(later)...)) {
			t.Errorf("the events that went through the queue are out of order: %v", got)
		}
		if !subsequence(got, idsOf(overflowed)) {
			t.Errorf("the events the sweep found are out of order: %v", got)
		}
	})
}

// TestPublishedEventsLeaveWithTheNextWrite: a published event stays in
// its record's outbox, claimed by the relay, until the next command's
// write of the record takes it out with its own change; the relay then
// removes nothing itself. Meanwhile a sweep neither counts it as pending
// nor publishes it again; what is left at shutdown the relay removes.
func TestPublishedEventsLeaveWithTheNextWrite(t *testing.T) {
	t.Parallel()
	broker := newBroker(t, 1)
	s := newStore(t)
	producer := newProducer(t, broker)
	rl, reg := newObservedRelay(relay.Config{Topic: topic, SweepInterval: quiet, SweepCheck: quiet, SweepMinAge: quiet, RemoveAfter: quiet}, producer, s)
	relaying := run(t, rl, 2*time.Second, 5*time.Second)
	ctx := context.Background()

	doc := campaign.Document{ID: "doc_next", AccountID: "org_next", Loan: &campaign.Loan{Status: "BEHIND"}, Version: 1}
	if _, err := s.ApplyDocument(ctx, doc, time.Now()); err != nil {
		t.Fatal(err)
	}
	c, e, err := campaign.Start(campaign.StartInput{SMS: true, Email: true, Tone: "t", Cadence: "c"}, doc, user, gen.New, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, m, err := s.Create(ctx, c, e); err != nil {
		t.Fatal(err)
	} else {
		rl.Enqueue(doc.ID, m)
	}
	eventually(t, 10*time.Second, "the start's event published and free to leave the outbox", func() bool {
		return len(rl.Published(doc.ID)) == 1
	})
	if err := rl.Sweep(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := value(t, reg, "rcm_outbox_pending_events"); got != 0 {
		t.Errorf("rcm_outbox_pending_events = %v after a sweep found only a published event, want 0", got)
	}

	// An inbound contact: a command of the document, not of a campaign.
	_, msgs, err := s.UpdateDocument(ctx, doc.AccountID, doc.ID, store.Nonce{}, func(r *store.Record) ([]events.Event, error) {
		at := time.Now().UTC().Truncate(time.Millisecond)
		a := store.Attempt{ID: gen.New("att_"), Channel: "sms", Direction: events.DirectionInbound, Decision: events.DecisionAllowed, AttemptedAt: at}
		r.Attempts = append(r.Attempts, a)
		head := events.Head{EventID: gen.New("evt_"), AccountID: doc.AccountID, DocumentID: doc.ID, Actor: user, At: at}
		return []events.Event{events.NewContactAttempted(head, events.ContactAttemptedData{AttemptID: a.ID, Channel: a.Channel, Direction: a.Direction, AttemptedAt: at})}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].ID != msgs[0].ID {
		t.Fatalf("the outbox holds %v after the contact's write, want the contact's event %s only", idsOf(pending), msgs[0].ID)
	}
	if got := value(t, reg, "rcm_outbox_taken_out_events_total"); got != 1 {
		t.Errorf("rcm_outbox_taken_out_events_total = %v, want 1", got)
	}
	if got := rl.Published(doc.ID); len(got) != 0 {
		t.Errorf("published events still waiting to leave the outbox after the write took them out: %v", got)
	}

	rl.Enqueue(doc.ID, msgs...)
	eventually(t, 10*time.Second, "the contact's event published and free to leave the outbox", func() bool {
		return len(rl.Published(doc.ID)) == 1
	})
	relaying.stop(t)
	waitEmpty(t, s, 5*time.Second)
	if got := value(t, reg, "rcm_outbox_removed_events_total"); got != 1 {
		t.Errorf("rcm_outbox_removed_events_total = %v, want 1: the contact's event, removed at shutdown", got)
	}
	if got := onTopic(t, broker, topic); got != 2 {
		t.Errorf("the topic holds %d records, want the 2 events once each", got)
	}
}
