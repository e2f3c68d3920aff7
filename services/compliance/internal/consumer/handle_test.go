package consumer_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/services/compliance/internal/consumer"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// parked records what was sent to the dead-letter topic.
type parked struct {
	mu      sync.Mutex
	reasons []error
	records []*kgo.Record
}

func (p *parked) park(_ context.Context, r *kgo.Record, reason error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.records, p.reasons = append(p.records, r), append(p.reasons, reason)
	return nil
}

func (p *parked) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.records)
}

// flaky fails its first fails appends, as a store that does not answer.
type flaky struct {
	l     *ledger.Ledger
	fails int
}

func (f *flaky) AppendBatches(ctx context.Context, batches []ledger.Batch) ([][]ledger.Appended, error) {
	if f.fails > 0 {
		f.fails--
		return nil, errors.New("store did not answer")
	}
	return f.l.AppendBatches(ctx, batches)
}

// TestRetriedBatchParksOnce: a batch that fails on the store and is
// retried parks its malformed record once, not once per attempt.
func TestRetriedBatchParksOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newDB(t)
	l := ledger.New(ledger.Config{DB: db})
	dl := &parked{}
	cons := consumer.New(consumer.Config{Ledger: &flaky{l: l, fails: 1}, DeadLetter: dl.park, Now: time.Now, Logger: logger}, prometheus.NewRegistry())
	good, id := optOut(t, "t", 0, "org_r", "")
	bad := &kgo.Record{Topic: "t", Key: []byte("org_r"), Value: []byte("not json")}
	batch := []*kgo.Record{bad, good}
	if err := cons.Handle(ctx, "t", 0, batch); err == nil {
		t.Fatal("first attempt: got nil, want the store's error")
	}
	if err := cons.Handle(ctx, "t", 0, batch); err != nil {
		t.Fatal(err)
	}
	if got := dl.count(); got != 1 {
		t.Fatalf("malformed record parked %d times over two attempts, want 1", got)
	}
	if !errors.Is(dl.reasons[0], events.ErrMalformed) {
		t.Fatalf("reason %v, want ErrMalformed", dl.reasons[0])
	}
	if got := logged(t, l, "org_r"); len(got) != 1 || got[0] != id {
		t.Fatalf("log %v, want [%s]", got, id)
	}
}

// handler is a Consumer called directly, as the poll loop calls it, with
// the dead letters it parks.
type handler struct {
	cons   *consumer.Consumer
	ledger *ledger.Ledger
	parked *parked
	reg    *prometheus.Registry
}

func newHandler(t *testing.T, db *mongo.Database) *handler {
	t.Helper()
	h := &handler{ledger: ledger.New(ledger.Config{DB: db}), parked: &parked{}, reg: prometheus.NewRegistry()}
	h.cons = consumer.New(consumer.Config{Ledger: h.ledger, DeadLetter: h.parked.park, Logger: logger}, h.reg)
	return h
}

// at numbers rs with offsets from first on, as on one partition.
func at(first int64, rs ...*kgo.Record) []*kgo.Record {
	for i, r := range rs {
		r.Offset = first + int64(i)
	}
	return rs
}

func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return testutil.ToFloat64(counter(t, reg, name))
}

// TestHandleKeepsEachAccountsOrder: one partition's batch interleaves
// several accounts; each account's log holds its events in offset order,
// numbered from 1, and verifies.
func TestHandleKeepsEachAccountsOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHandler(t, newDB(t))
	want := map[string][]string{}
	var batch []*kgo.Record
	for i := range 12 {
		account := []string{"org_x", "org_y", "org_x", "org_z"}[i%4]
		r, id := optOut(t, "t", 0, account, "")
		batch = append(batch, r)
		want[account] = append(want[account], id)
	}
	if err := h.cons.Handle(ctx, "t", 0, at(0, batch...)); err != nil {
		t.Fatal(err)
	}
	for account, ids := range want {
		if got := logged(t, h.ledger, account); !slices.Equal(got, ids) {
			t.Errorf("%s: log %v, want %v", account, got, ids)
		}
		if v, err := h.ledger.Verify(ctx, account); err != nil || !v.OK || v.HeadSeq != int64(len(ids)) {
			t.Errorf("%s: verify %+v %v", account, v, err)
		}
	}
	if got := appends(t, h.reg); got != 12 {
		t.Fatalf("appends counted %v, want 12", got)
	}
}

// appends sums rcm_compliance_appends_total over its event types.
func appends(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "rcm_compliance_appends_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestHandleReplay: a batch delivered again, to the same process or to a
// fresh one that knows no heads, appends nothing twice, counts the
// replays, and appends the new event behind them.
func TestHandleReplay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := newDB(t)
	h := newHandler(t, db)
	var batch []*kgo.Record
	var ids []string
	for _, account := range []string{"org_r", "org_s", "org_r", "org_r"} {
		r, id := optOut(t, "t", 0, account, "")
		batch = append(batch, r)
		if account == "org_r" {
			ids = append(ids, id)
		}
	}
	at(0, batch...)
	if err := h.cons.Handle(ctx, "t", 0, batch); err != nil {
		t.Fatal(err)
	}
	if err := h.cons.Handle(ctx, "t", 0, batch); err != nil {
		t.Fatal(err)
	}
	if got := value(t, h.reg, "rcm_compliance_replays_total"); got != 4 {
		t.Fatalf("same process: replays counted %v, want 4", got)
	}
	fresh := newHandler(t, db)
	next, id := optOut(t, "t", 0, "org_r", "")
	if err := fresh.cons.Handle(ctx, "t", 0, append(batch[1:], at(4, next)...)); err != nil {
		t.Fatal(err)
	}
	if got := value(t, fresh.reg, "rcm_compliance_replays_total"); got != 3 {
		t.Fatalf("fresh process: replays counted %v, want 3", got)
	}
	if got := appends(t, fresh.reg); got != 1 {
		t.Fatalf("fresh process: appends counted %v, want 1", got)
	}
	if got, want := logged(t, h.ledger, "org_r"), append(ids, id); !slices.Equal(got, want) {
		t.Fatalf("org_r: log %v, want %v", got, want)
	}
	if got := logged(t, h.ledger, "org_s"); len(got) != 1 {
		t.Fatalf("org_s: log %v, want one entry", got)
	}
	if v, err := h.ledger.Verify(ctx, "org_r"); err != nil || !v.OK || v.HeadSeq != 4 {
		t.Fatalf("verify: %+v %v", v, err)
	}
	if n := h.parked.count() + fresh.parked.count(); n != 0 {
		t.Fatalf("%d records parked, want none", n)
	}
}

// TestHandleDeadLettersWhatIsNotAnEvent: records that are not valid
// events are parked with ErrMalformed, in offset order, and counted; the
// valid events around them are appended in order.
func TestHandleDeadLettersWhatIsNotAnEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHandler(t, newDB(t))
	first, id1 := optOut(t, "t", 0, "org_m", "")
	last, id2 := optOut(t, "t", 0, "org_m", "")
	noHeaders := &kgo.Record{Topic: "t", Key: []byte("org_m"), Value: first.Value}
	wrongKey, _ := optOut(t, "t", 0, "org_m", "")
	wrongKey.Key = []byte("org_other")
	notJSON, _ := optOut(t, "t", 0, "org_m", "")
	notJSON.Value = []byte(`{"eventType":`)
	notValid, _ := optOut(t, "t", 0, "org_m", "")
	notValid.Value = []byte(`{"eventType":"opt_out"}`)
	batch := at(0, noHeaders, first, wrongKey, notJSON, last, notValid)
	if err := h.cons.Handle(ctx, "t", 0, batch); err != nil {
		t.Fatal(err)
	}
	if got, want := logged(t, h.ledger, "org_m"), []string{id1, id2}; !slices.Equal(got, want) {
		t.Fatalf("log %v, want %v", got, want)
	}
	var offsets []int64
	for i, r := range h.parked.records {
		offsets = append(offsets, r.Offset)
		if !errors.Is(h.parked.reasons[i], events.ErrMalformed) {
			t.Errorf("offset %d: reason %v, want ErrMalformed", r.Offset, h.parked.reasons[i])
		}
	}
	if want := []int64{0, 2, 3, 5}; !slices.Equal(offsets, want) {
		t.Fatalf("parked offsets %v, want %v", offsets, want)
	}
	if got := value(t, h.reg, "rcm_compliance_dead_letters_total"); got != 4 {
		t.Fatalf("dead letters counted %v, want 4", got)
	}
}
