package consumer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/dev/testenv"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/compliance/internal/consumer"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var (
	gen        = ids.NewGenerator(time.Now)
	campaignID = gen.New(ids.CampaignPrefix)
	logger     = slog.New(slog.NewTextHandler(io.Discard, nil))
)

// optOut returns an opt_out event of account as the relay publishes it,
// on partition, with extra JSON members added to its data ("" for none).
func optOut(t *testing.T, topic string, partition int32, account, extra string) (*kgo.Record, string) {
	t.Helper()
	f, active := false, true
	e := events.Event{
		EventID: gen.New(ids.EventPrefix), EventType: events.TypeOptOut, AccountID: account,
		DocumentID: "doc_1", CampaignID: campaignID, Actor: events.Actor{Type: events.ActorUser, ID: "user_1", SessionID: "sess_1"},
		OccurredAt: events.FormatTime(time.Now()), Channel: "sms", Notes: "n° 1",
		Deactivated: &f, Active: &active, ActiveChannels: []string{"email"},
	}
	m, err := events.NewMessage(e, "")
	if err != nil {
		t.Fatal(err)
	}
	if extra != "" {
		m.Data = append(m.Data[:len(m.Data)-1:len(m.Data)-1], ","+extra+"}"...)
	}
	if err := events.ValidateData(m.Data); err != nil {
		t.Fatalf("the event must be schema-valid: %v", err)
	}
	r := kafkarec.Record(m, topic)
	r.Partition = partition
	return r, e.EventID
}

// member is one compliance consumer of a group.
type member struct {
	calls atomic.Int64
	reg   *prometheus.Registry
}

// start runs a compliance consumer on db in group until the test ends.
func start(t *testing.T, db *mongo.Database, group, topic, dlq string) *member {
	t.Helper()
	m := &member{reg: prometheus.NewRegistry()}
	led := ledger.New(ledger.Config{DB: db, Now: time.Now})
	forget := func(context.Context, *kgo.Client, map[string][]int32) { led.Forget() }
	cl := kafkatest.Client(t, append(kafkax.GroupOpts(group, topic, "", 6*time.Second),
		kgo.RebalanceTimeout(30*time.Second), kgo.OnPartitionsRevoked(forget), kgo.OnPartitionsLost(forget))...)
	cons := consumer.New(consumer.Config{Ledger: led, DeadLetter: kafkax.DeadLetter(cl, dlq), Now: time.Now, Logger: logger}, m.reg)
	// As the service runs it: each fetch prepared while the one before
	// is written.
	stages := cons.Stages()
	write := stages.Write
	stages.Write = func(ctx context.Context, topic string, p int32, rs []*kgo.Record, prepared any) error {
		m.calls.Add(1)
		return write(ctx, topic, p, rs, prepared)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = kafkax.ConsumeStaged(ctx, cl, 100, stages, logger)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

func produce(t *testing.T, rs ...*kgo.Record) {
	t.Helper()
	cl := kafkatest.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logged returns the event ids of account's log, in seq order.
func logged(t *testing.T, l *ledger.Ledger, account string) []string {
	t.Helper()
	ctx := context.Background()
	head, err := l.Head(ctx, account)
	if err != nil || head == 0 {
		return nil
	}
	slots, err := l.Range(ctx, account, 1, 1, int(head))
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range slots {
		if s.Found {
			out = append(out, s.Entry.EventID)
		}
	}
	return out
}

func newDB(t *testing.T) *mongo.Database {
	t.Helper()
	db := mongotest.Client(t).Database(mongotest.NewDatabase(t))
	if err := ledger.New(ledger.Config{DB: db, Now: time.Now}).EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestAdditiveFieldsAreLogged: a schema-valid event whose additive fields
// hold fractional numbers, MongoDB-extended-JSON-looking objects and keys
// beyond the BMP is appended, reads back byte for byte, and verifies.
func TestAdditiveFieldsAreLogged(t *testing.T) {
	t.Parallel()
	topic, dlq := kafkatest.NewTopic(t, 1), kafkatest.NewTopic(t, 1)
	db := newDB(t)
	start(t, db, "g-"+topic, topic, dlq)
	r1, id1 := optOut(t, topic, 0, "org_a", "")
	r2, id2 := optOut(t, topic, 0, "org_a", `"rate":0.1,"limit":1e21,"tiny":5e-7,"count":{"$numberLong":"5"},"at":{"$date":"2026-04-27T10:00:00Z"},"\ud83d\ude00 clé":"ü"`)
	r3, id3 := optOut(t, topic, 0, "org_a", "")
	produce(t, r1, r2, r3)

	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	eventually(t, 20*time.Second, "three entries", func() bool { return len(logged(t, l, "org_a")) == 3 })
	if got := logged(t, l, "org_a"); !slices.Equal(got, []string{id1, id2, id3}) {
		t.Fatalf("log %v, want %v", got, []string{id1, id2, id3})
	}
	e, _, err := l.Get(context.Background(), "org_a", 2)
	if err != nil || string(e.Data) != string(r2.Value) {
		t.Fatalf("entry 2 data\n got %s %v\nwant %s", e.Data, err, r2.Value)
	}
	if v, err := l.Verify(context.Background(), "org_a"); err != nil || !v.OK || v.HeadSeq != 3 {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// TestUnappendableEventIsDeadLettered: a schema-valid event that the log
// can never hold (a number beyond the range of a double, which RFC 8785
// cannot encode) is parked on the dead-letter topic with its reason and
// counted, and the events after it on its partition are appended.
func TestUnappendableEventIsDeadLettered(t *testing.T) {
	t.Parallel()
	topic, dlq := kafkatest.NewTopic(t, 1), kafkatest.NewTopic(t, 1)
	db := newDB(t)
	m := start(t, db, "g-"+topic, topic, dlq)
	r1, id1 := optOut(t, topic, 0, "org_b", "")
	bad, _ := optOut(t, topic, 0, "org_b", `"amount":1e400`)
	r3, id3 := optOut(t, topic, 0, "org_b", "")
	produce(t, r1, bad)
	produce(t, r3) // another fetch, so the next batch comes after the failure too
	r4, id4 := optOut(t, topic, 0, "org_b", "")
	produce(t, r4)

	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	want := []string{id1, id3, id4}
	eventually(t, 20*time.Second, "the events after the unappendable one are logged", func() bool {
		return slices.Equal(logged(t, l, "org_b"), want)
	})
	if v, err := l.Verify(context.Background(), "org_b"); err != nil || !v.OK || v.HeadSeq != 3 {
		t.Fatalf("verify: %+v %v", v, err)
	}
	parked := kafkatest.Client(t, kgo.ConsumeTopics(dlq))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fs := parked.PollRecords(ctx, 10)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) != 1 || string(recs[0].Value) != string(bad.Value) {
		t.Fatalf("dead letters: got %d records, want the unappendable event", len(recs))
	}
	reason := ""
	for _, h := range recs[0].Headers {
		if h.Key == kafkax.HeaderDLQReason {
			reason = string(h.Value)
		}
	}
	if !strings.Contains(reason, "cannot be logged") || !strings.Contains(reason, "out of range") {
		t.Fatalf("reason %q", reason)
	}
	if n, err := testutil.GatherAndCount(m.reg, "rcm_compliance_dead_letters_total"); err != nil || n != 1 {
		t.Fatalf("dead-letter metric: %d %v", n, err)
	}
	if got := testutil.ToFloat64(counter(t, m.reg, "rcm_compliance_dead_letters_total")); got != 1 {
		t.Fatalf("dead letters counted %v, want 1", got)
	}
}

// counter returns the value of the counter name on reg as a collector.
func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: name},
				func() float64 { return mf.GetMetric()[0].GetCounter().GetValue() })
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// TestRebalanceWhileTheStoreIsDown: while every batch fails because the
// store is stopped, a member that joins gets partitions well within the
// rebalance timeout, and once the store is back every event is logged once,
// in order, none skipped.
func TestRebalanceWhileTheStoreIsDown(t *testing.T) {
	t.Parallel()
	store := mongotest.Restartable(t)
	name := mongotest.NewDatabase(t)
	db := store.Client(t).Database(name)
	if err := ledger.New(ledger.Config{DB: db, Now: time.Now}).EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	topic, dlq := kafkatest.NewTopic(t, 2), kafkatest.NewTopic(t, 1)
	group := "g-" + topic
	first := start(t, db, group, topic, dlq)

	accounts := []string{"org_p0", "org_p1", "org_q0", "org_q1"}
	want := map[string][]string{}
	batch := func(n int) []*kgo.Record {
		var rs []*kgo.Record
		for i := range n {
			for a, account := range accounts {
				r, id := optOut(t, topic, int32(a%2), account, fmt.Sprintf(`"step":%d.5`, i))
				rs = append(rs, r)
				want[account] = append(want[account], id)
			}
		}
		return rs
	}
	l := ledger.New(ledger.Config{DB: db, Now: time.Now})
	complete := func() bool {
		for _, a := range accounts {
			if len(logged(t, l, a)) != len(want[a]) {
				return false
			}
		}
		return true
	}
	produce(t, batch(3)...)
	eventually(t, 20*time.Second, "the first events logged", complete)

	store.Stop()
	calls := first.calls.Load()
	produce(t, batch(5)...)
	eventually(t, 20*time.Second, "the first member fails on the stopped store", func() bool { return first.calls.Load() >= calls+2 })

	joined := time.Now()
	second := start(t, store.Client(t).Database(name), group, topic, dlq)
	eventually(t, 10*time.Second, "the second member gets a partition (rebalance timeout 30s)", func() bool { return second.calls.Load() > 0 })
	t.Logf("the second member got a partition %s after joining", time.Since(joined).Round(time.Millisecond))

	if err := store.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "every event logged", complete)
	for _, a := range accounts {
		if got := logged(t, l, a); !slices.Equal(got, want[a]) {
			t.Errorf("%s: log %v, want %v", a, got, want[a])
		}
		if v, err := l.Verify(context.Background(), a); err != nil || !v.OK {
			t.Errorf("%s: verify %+v %v", a, v, err)
		}
	}
}

// TestPreparationLeavesACoreToTheWrite: a batch is prepared on every core
// but one, one goroutine per 16 records, and on one goroutine at least,
// however few the cores or the records.
func TestPreparationLeavesACoreToTheWrite(t *testing.T) {
	for _, c := range []struct{ records, procs, want int }{
		{1000, 2, 1},
		{1000, 8, 7},
		{40, 8, 3},
		{10, 8, 1},
		{1000, 1, 1},
		{0, 4, 1},
	} {
		if got := consumer.PrepareWorkers(c.records, c.procs); got != c.want {
			t.Errorf("%d records on %d cores: %d goroutines, want %d", c.records, c.procs, got, c.want)
		}
	}
}
