package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

// producer records what was published.
type producer struct {
	mu      sync.Mutex
	records []*kgo.Record
}

func (p *producer) ProduceSync(_ context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	p.mu.Lock()
	defer p.mu.Unlock()
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
}

func (d *deadLetters) park(_ context.Context, _ *kgo.Record, reason error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
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
	log := seqlog.New(db.Collection("items"), db.Collection("item_heads"))
	if err := log.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	f := &fixture{db: db, producer: &producer{}, dlq: &deadLetters{}, gen: ids.NewGenerator(time.Now)}
	f.consumer = New(Config{
		Log: log, Producer: f.producer, ActivityTopic: "activity", DeadLetter: f.dlq.park,
		Now: time.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
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
	log := seqlog.New(f.db.Collection("items"), f.db.Collection("item_heads"))
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
	if err := f.db.Collection("items").FindOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key("org_a", 2)}}).Decode(&raw); err != nil {
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
	if got := testutil.ToFloat64(f.consumer.deadLetters); got != 2 {
		t.Fatalf("got %v dead letters counted, want 2", got)
	}
}
