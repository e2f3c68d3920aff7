package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/dev/testenv"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// producer records what was published.
type producer struct {
	mu      sync.Mutex
	records []*kgo.Record
	calls   int
}

func (p *producer) ProduceSync(_ context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	var out kgo.ProduceResults
	for _, r := range rs {
		p.records = append(p.records, r)
		out = append(out, kgo.ProduceResult{Record: r})
	}
	return out
}

// published returns "account:seq:eventId" of every published record.
func (p *producer) published(t *testing.T) []string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.records {
		var it activity.Item
		if err := json.Unmarshal(r.Value, &it); err != nil {
			t.Fatalf("published value %s: %v", r.Value, err)
		}
		out = append(out, string(r.Key)+":"+it.Cursor()+":"+it.ID)
	}
	return out
}

type deadLetters struct {
	mu      sync.Mutex
	reasons []error
	fail    error // when set, parking fails with it
}

func (d *deadLetters) park(_ context.Context, _ *kgo.Record, reason error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return d.fail
	}
	d.reasons = append(d.reasons, reason)
	return nil
}

type fixture struct {
	db       *mongo.Database
	consumer *Consumer
	producer *producer
	dlq      *deadLetters
	gen      *ids.Generator
	offset   int64
}

func newFixture(t *testing.T, db *mongo.Database) *fixture {
	t.Helper()
	if db == nil {
		db = mongotest.Client(t).Database(mongotest.NewDatabase(t))
	}
	items := store.New(store.Config{DB: db})
	if err := items.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	f := &fixture{db: db, producer: &producer{}, dlq: &deadLetters{}, gen: ids.NewGenerator(time.Now)}
	f.consumer = New(Config{
		Store: items, Producer: f.producer, ActivityTopic: "activity", DeadLetter: f.dlq.park,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, prometheus.NewRegistry())
	return f
}

// record returns the Kafka record of a valid opt-out of account.
func (f *fixture) record(t *testing.T, account string) *kgo.Record {
	t.Helper()
	deactivated, active := false, true
	e := events.Event{
		EventID: f.gen.New(ids.EventPrefix), EventType: events.TypeOptOut, AccountID: account,
		DocumentID: "doc_1", CampaignID: f.gen.New(ids.CampaignPrefix),
		Actor:      events.Actor{Type: events.ActorUser, ID: "user_1"},
		OccurredAt: events.FormatTime(time.Now()),
		Channel:    "sms", Deactivated: &deactivated, Active: &active, ActiveChannels: []string{"email"},
	}
	m, err := events.NewMessage(e, "")
	if err != nil {
		t.Fatal(err)
	}
	r := kafkarec.Record(m, events.Topic)
	r.Offset = f.offset
	f.offset++
	return r
}

func eventID(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == kafkarec.HeaderID {
			return string(h.Value)
		}
	}
	return ""
}

// stored returns the event ids of account's sequence, read by _id from 1.
func (f *fixture) stored(t *testing.T, account string) []string {
	t.Helper()
	log := seqlog.New(seqlog.Config{Docs: f.db.Collection(store.ItemsCollection), Heads: f.db.Collection(store.HeadsCollection)})
	var out []string
	for seq := int64(1); ; seq++ {
		var rec activity.Record
		found, err := log.Get(context.Background(), account, seq, &rec)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			return out
		}
		if rec.Seq != seq || rec.AccountID != account || rec.Key != seqlog.Key(account, seq) || rec.StoredAt.IsZero() || rec.Summary == "" {
			t.Fatalf("seq %d: got %+v, want a complete record of %s at seq %d", seq, rec, account, seq)
		}
		out = append(out, rec.ID)
	}
}

func TestHandleStoresEachEventOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil)
	a1, a2, b1, a3 := f.record(t, "org_a"), f.record(t, "org_a"), f.record(t, "org_b"), f.record(t, "org_a")
	batch := []*kgo.Record{a1, a2, b1, a1, a3} // a1 delivered twice in one batch
	if err := f.consumer.Handle(ctx, events.Topic, 0, batch); err != nil {
		t.Fatal(err)
	}
	wantA := []string{eventID(a1), eventID(a2), eventID(a3)}
	wantB := []string{eventID(b1)}
	if got := f.stored(t, "org_a"); !slices.Equal(got, wantA) {
		t.Fatalf("org_a: got %v, want %v", got, wantA)
	}
	if got := f.stored(t, "org_b"); !slices.Equal(got, wantB) {
		t.Fatalf("org_b: got %v, want %v", got, wantB)
	}
	firstPublish := f.producer.published(t)
	want := []string{"org_a:1:" + eventID(a1), "org_a:2:" + eventID(a2), "org_a:3:" + eventID(a3), "org_b:1:" + eventID(b1)}
	if !slices.Equal(firstPublish, want) {
		t.Fatalf("published %v, want %v", firstPublish, want)
	}
	// The stored document is flat: seqlog's fields and the item's.
	var raw bson.M
	if err := f.db.Collection(store.ItemsCollection).FindOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key("org_a", 2)}}).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"_id", "accountId", "seq", "eventId", "type", "documentId", "campaignId", "summary", "occurredAt", "actor", "storedAt"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("stored document %v has no %s", raw, k)
		}
	}
	if got := testutil.ToFloat64(f.consumer.stored); got != 4 {
		t.Fatalf("got %v items stored, want 4", got)
	}

	// The whole batch again, as after a crash before the commit: nothing
	// new is stored, and the same items are published again at the same
	// cursors.
	if err := f.consumer.Handle(ctx, events.Topic, 0, batch); err != nil {
		t.Fatal(err)
	}
	// And once more through a fresh process that knows no heads, with a
	// new event behind the replays.
	g := newFixture(t, f.db)
	g.gen, g.producer, g.consumer.producer = f.gen, f.producer, f.producer
	a4 := g.record(t, "org_a")
	if err := g.consumer.Handle(ctx, events.Topic, 0, []*kgo.Record{a2, a3, a4}); err != nil {
		t.Fatal(err)
	}
	wantA = append(wantA, eventID(a4))
	if got := f.stored(t, "org_a"); !slices.Equal(got, wantA) {
		t.Fatalf("org_a after redelivery: got %v, want %v", got, wantA)
	}
	if got := f.stored(t, "org_b"); !slices.Equal(got, wantB) {
		t.Fatalf("org_b after redelivery: got %v, want %v", got, wantB)
	}
	got := f.producer.published(t)[len(firstPublish):]
	want = append(slices.Clone(want), "org_a:2:"+eventID(a2), "org_a:3:"+eventID(a3), "org_a:4:"+eventID(a4))
	if !slices.Equal(got, want) {
		t.Fatalf("republished %v, want %v", got, want)
	}
	if n := testutil.ToFloat64(f.consumer.replayed) + testutil.ToFloat64(g.consumer.replayed); n != 6 {
		t.Fatalf("got %v replays, want 6", n)
	}
}

func TestHandleDeadLettersMalformedAndGoesOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil)
	good := f.record(t, "org_a")
	noHeaders := &kgo.Record{Topic: events.Topic, Key: []byte("org_a"), Value: []byte(`{"eventId":"x"}`), Offset: 10}
	wrongKey := f.record(t, "org_a")
	wrongKey.Key = []byte("org_other")
	after := f.record(t, "org_a")
	if err := f.consumer.Handle(ctx, events.Topic, 0, []*kgo.Record{good, noHeaders, wrongKey, after}); err != nil {
		t.Fatal(err)
	}
	if got, want := f.stored(t, "org_a"), []string{eventID(good), eventID(after)}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	if len(f.dlq.reasons) != 2 {
		t.Fatalf("got %d dead letters, want 2", len(f.dlq.reasons))
	}
	for _, r := range f.dlq.reasons {
		if !errors.Is(r, events.ErrMalformed) {
			t.Fatalf("got reason %v, want ErrMalformed", r)
		}
	}
	if got := testutil.ToFloat64(f.consumer.deadLettered); got != 2 {
		t.Fatalf("got %v dead letters counted, want 2", got)
	}
}

// TestHandleKeepsEachAccountsOrder: one partition's batch interleaves
// three accounts; each account's items are stored and published in offset
// order, numbered from 1.
func TestHandleKeepsEachAccountsOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	accounts := []string{"org_x", "org_y", "org_x", "org_z", "org_y"}
	want := map[string][]string{}
	var batch []*kgo.Record
	for range 3 {
		for _, a := range accounts {
			r := f.record(t, a)
			batch = append(batch, r)
			want[a] = append(want[a], eventID(r))
		}
	}
	if err := f.consumer.Handle(context.Background(), events.Topic, 0, batch); err != nil {
		t.Fatal(err)
	}
	published := map[string][]string{}
	for _, p := range f.producer.published(t) {
		account, rest, _ := strings.Cut(p, ":")
		published[account] = append(published[account], rest)
	}
	for a, ids := range want {
		if got := f.stored(t, a); !slices.Equal(got, ids) {
			t.Errorf("%s: stored %v, want %v", a, got, ids)
		}
		var wantPublished []string
		for i, id := range ids {
			wantPublished = append(wantPublished, fmt.Sprintf("%d:%s", i+1, id))
		}
		if !slices.Equal(published[a], wantPublished) {
			t.Errorf("%s: published %v, want %v", a, published[a], wantPublished)
		}
	}
}

// TestHandleParksOnceWhenRetried: nothing is stored before the batch's
// malformed records are parked; a batch retried after a failure of the
// store parks nothing twice and stores nothing twice.
func TestHandleParksOnceWhenRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	bad := &kgo.Record{Topic: events.Topic, Key: []byte("org_a"), Value: []byte("not json"), Offset: f.offset}
	f.offset++
	good := f.record(t, "org_a")
	batch := []*kgo.Record{bad, good}
	ctx := context.Background()

	failing := errors.New("broker down")
	f.dlq.fail = failing
	if err := f.consumer.Handle(ctx, events.Topic, 0, batch); !errors.Is(err, failing) {
		t.Fatalf("dead-letter topic down: got %v, want its error", err)
	}
	if got := f.stored(t, "org_a"); len(got) != 0 {
		t.Fatalf("dead-letter topic down: stored %v, want nothing after the record that could not be parked", got)
	}
	f.dlq.fail = nil
	down, cancel := context.WithCancel(ctx)
	cancel() // the store cannot be reached
	if err := f.consumer.Handle(down, events.Topic, 0, batch); err == nil {
		t.Fatal("store unreachable: got nil, want an error")
	}
	for range 2 { // the retry, and a redelivery after a lost commit
		if err := f.consumer.Handle(ctx, events.Topic, 0, batch); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.stored(t, "org_a"); !slices.Equal(got, []string{eventID(good)}) {
		t.Fatalf("stored %v, want the valid event once", got)
	}
	if len(f.dlq.reasons) != 1 || !errors.Is(f.dlq.reasons[0], events.ErrMalformed) {
		t.Fatalf("parked %v, want the malformed record once", f.dlq.reasons)
	}
	if got := testutil.ToFloat64(f.consumer.deadLettered); got != 1 {
		t.Fatalf("dead letters counted %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.consumer.replayed); got != 1 {
		t.Fatalf("replays counted %v, want 1: the redelivery found the stored item", got)
	}
}

// TestHandleIgnoresUnknownTypes: an event of a type added after this
// consumer was built is skipped, neither stored nor parked; the new
// contact events are stored with their summaries.
func TestHandleIgnoresUnknownTypes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil)
	before, after := f.record(t, "org_a"), f.record(t, "org_a")
	unknown := f.record(t, "org_a")
	unknown.Value = bytes.Replace(unknown.Value, []byte(`"eventType":"opt_out"`), []byte(`"eventType":"campaign_paused"`), 1)
	for i, h := range unknown.Headers {
		if h.Key == kafkarec.HeaderType {
			unknown.Headers[i].Value = []byte(events.CEType("campaign_paused"))
		}
	}
	e := events.NewContactAttempted(events.Head{EventID: f.gen.New(ids.EventPrefix), AccountID: "org_a", DocumentID: "doc_1",
		CampaignID: f.gen.New(ids.CampaignPrefix), Actor: events.Actor{Type: events.ActorUser, ID: "user_1"}, At: time.Now()},
		events.ContactAttemptedData{AttemptID: "att_01jsz8k5w4q4c7f3x1y2z3a4b7", Channel: "call", Direction: events.DirectionOutbound, AttemptedAt: time.Now()})
	m, err := events.NewMessage(e, "")
	if err != nil {
		t.Fatal(err)
	}
	attempt := kafkarec.Record(m, events.Topic)
	if err := f.consumer.Handle(ctx, events.Topic, 0, []*kgo.Record{before, unknown, attempt, after}); err != nil {
		t.Fatal(err)
	}
	if got, want := f.stored(t, "org_a"), []string{eventID(before), e.EventID, eventID(after)}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	if len(f.dlq.reasons) != 0 {
		t.Fatalf("got dead letters %v, want none", f.dlq.reasons)
	}
}

// commandCounter counts the commands a client sends, by name.
type commandCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *commandCounter) started(_ context.Context, e *event.CommandStartedEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[e.CommandName]++
}

func (c *commandCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	return out
}

func total(counts map[string]int) int {
	n := 0
	for _, v := range counts {
		n += v
	}
	return n
}

// A batch spreads over many accounts; storing it costs a few commands for
// the whole batch once the heads are known, not a write or two per
// account, and a batch that repeats stored events among new ones (a
// redelivery after a crash) stores each event once, in order.
func TestHandleBatchesTheStoreWritesOfManyAccounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	counter := &commandCounter{counts: map[string]int{}}
	cl := mongotest.MonitoredClient(t, &event.CommandMonitor{Started: counter.started})
	f := newFixture(t, cl.Database(mongotest.NewDatabase(t)))
	const accounts = 40
	account := func(i int) string { return fmt.Sprintf("org_%02d", i) }
	var first []*kgo.Record
	for i := range accounts {
		first = append(first, f.record(t, account(i)))
	}
	if err := f.consumer.Handle(ctx, events.Topic, 0, first); err != nil {
		t.Fatal(err)
	}
	counter.take() // the first batch looks every head up

	var second []*kgo.Record
	for i := range accounts {
		second = append(second, f.record(t, account(i)), f.record(t, account(i)))
	}
	if err := f.consumer.Handle(ctx, events.Topic, 0, second); err != nil {
		t.Fatal(err)
	}
	// One insert of the 80 items and the 40 heads' hints in writes of
	// 16 accounts each (seqlog's hintChunk: the embedded store's bound).
	if got, want := counter.take(), 1+(accounts+15)/16; total(got) > want {
		t.Fatalf("a batch of %d items over %d accounts with known heads sent %d commands (%v), want at most %d",
			len(second), accounts, total(got), got, want)
	}

	// Redelivered: the second batch again, with new events between.
	var third []*kgo.Record
	var fresh []*kgo.Record
	for i := range accounts {
		r := f.record(t, account(i))
		fresh = append(fresh, r)
		third = append(third, second[2*i], r, second[2*i+1])
	}
	if err := f.consumer.Handle(ctx, events.Topic, 0, third); err != nil {
		t.Fatal(err)
	}
	for i := range accounts {
		want := []string{eventID(first[i]), eventID(second[2*i]), eventID(second[2*i+1]), eventID(fresh[i])}
		if got := f.stored(t, account(i)); !slices.Equal(got, want) {
			t.Fatalf("%s: got %v, want %v", account(i), got, want)
		}
	}
}

// TestPartitionsHandledTogetherPublishInOneCall: the batches of
// partitions handled at the same time are stored in one write and their
// items published in one produce call, each partition's handler
// returning once its own items are stored and published.
func TestPartitionsHandledTogetherPublishInOneCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil)
	a, b := f.record(t, "org_a"), f.record(t, "org_b")
	// A third partition announced and not yet come holds the write until
	// both batches wait for it.
	held := f.consumer.merged.Expect()
	errs := make(chan error, 2)
	go func() { errs <- f.consumer.Handle(ctx, events.Topic, 0, []*kgo.Record{a}) }()
	go func() { errs <- f.consumer.Handle(ctx, events.Topic, 1, []*kgo.Record{b}) }()
	servicetest.Eventually(t, 5*time.Second, "both partitions' batches waiting", func() bool { return f.consumer.merged.Waiting() == 2 })
	held.Withdraw()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got := f.producer.published(t)
	slices.Sort(got)
	want := []string{"org_a:1:" + eventID(a), "org_b:1:" + eventID(b)}
	if !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	f.producer.mu.Lock()
	calls := f.producer.calls
	f.producer.mu.Unlock()
	if calls != 1 {
		t.Fatalf("%d produce calls for the two partitions handled together, want 1", calls)
	}
}

// TestAFetchIsOneWrite: the partitions of a fetch that ConsumeLoop hands
// over at once are stored and published together, in one produce call,
// however their goroutines happen to start: the first batch ready waits
// for the others the loop has under way (kafkax.WritesOf).
func TestAFetchIsOneWrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	const partitions, each = 3, 4
	topic := kafkatest.NewTopic(t, partitions)
	var rs []*kgo.Record
	for part := range int32(partitions) {
		for range each {
			r := f.record(t, fmt.Sprintf("org_f%d", part))
			r.Topic, r.Partition, r.Offset = topic, part, 0
			rs = append(rs, r)
		}
	}
	// Produced before the member starts: its first fetch holds them all.
	producer := kafkatest.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := producer.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	group := "g-" + topic
	cl := kafkatest.Client(t, append(kafkax.GroupOpts(group, topic, "", 6*time.Second), kgo.RebalanceTimeout(30*time.Second))...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = kafkax.ConsumeLoop(ctx, cl, 100, f.consumer.Handle, slog.New(slog.NewTextHandler(io.Discard, nil)), kafkax.PartitionsAtOnce(partitions))
	}()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for {
		f.producer.mu.Lock()
		n, calls := len(f.producer.records), f.producer.calls
		f.producer.mu.Unlock()
		if n >= partitions*each {
			if calls != 1 {
				t.Fatalf("%d items published in %d produce calls, want one", n, calls)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d items published within 20s", n, partitions*each)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
