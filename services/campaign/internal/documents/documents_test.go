package documents_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/app/apptest"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/documents"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

var (
	logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	owner  = principal.Principal{AccountID: "org_docs", UserID: "user_1", SessionID: "sess_1", OrgID: "org_docs"}
)

// deadLetters records what the consumer dead-letters; fail makes it fail.
type deadLetters struct {
	mu   sync.Mutex
	keys []string
	fail error
}

func (d *deadLetters) send(_ context.Context, r *kgo.Record, reason error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return d.fail
	}
	if !errors.Is(reason, events.ErrMalformed) {
		return fmt.Errorf("dead-lettered for %v, want a malformed record", reason)
	}
	d.keys = append(d.keys, string(r.Key))
	return nil
}

type fixture struct {
	store    *store.Store
	app      *app.Campaigns
	relay    *apptest.Relay
	dlq      *deadLetters
	consumer *documents.Consumer
	reg      *prometheus.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{
		store: apptest.NewStore(t, mongotest.Client(t).Database(mongotest.NewDatabase(t))),
		relay: &apptest.Relay{}, dlq: &deadLetters{}, reg: prometheus.NewRegistry(),
	}
	f.app = app.New(app.Config{Store: f.store, Relay: f.relay, NewID: ids.NewGenerator(time.Now).New, Now: time.Now,
		Logger: logger, Registerer: f.reg})
	f.consumer = documents.NewConsumer(documents.ConsumerConfig{Documents: f.app, DeadLetter: f.dlq.send, Logger: logger}, f.reg)
	return f
}

// offsets numbers the records handed to the consumer.
var offsets struct {
	sync.Mutex
	n int64
}

func record(key string, value string) *kgo.Record {
	offsets.Lock()
	defer offsets.Unlock()
	offsets.n++
	r := &kgo.Record{Topic: "documents.v1", Key: []byte(key), Offset: offsets.n}
	if value != "" {
		r.Value = []byte(value)
	}
	return r
}

// version is a documents.v1 record of doc_x at version v, with the loan
// status loan ("" for no loan).
func version(v int64, loan string) *kgo.Record {
	l := "null"
	if loan != "" {
		l = `{"status":"` + loan + `"}`
	}
	return record("doc_x", fmt.Sprintf(`{"id":"doc_x","accountId":%q,"loan":%s,"version":%d}`, owner.AccountID, l, v))
}

func tombstone() *kgo.Record { return record("doc_x", "") }

func (f *fixture) handle(t *testing.T, batch ...*kgo.Record) {
	t.Helper()
	if err := f.consumer.Handle(context.Background(), "documents.v1", 0, batch); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) start(t *testing.T) string {
	t.Helper()
	in := app.StartInput{DocumentID: "doc_x", StartInput: campaign.StartInput{SMS: true, Email: true, Tone: "kind", Cadence: "weekly"}}
	ans, err := f.app.Start(context.Background(), app.Request{Principal: owner}, in)
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.store.ListByDocument(context.Background(), owner.AccountID, "doc_x", "", 1)
	if err != nil || len(c) != 1 {
		t.Fatalf("after a start answered %q: %v %v", ans.Body, c, err)
	}
	return c[0].ID
}

// counter returns the value of the counter name, 0 if it is absent.
func (f *fixture) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// TestApply: the documents consumer keeps the read model and ends the
// active campaigns of a document whose loan leaves BEHIND, once each,
// however often an update is delivered.
func TestApply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		before  func(t *testing.T, f *fixture)
		batches [][]*kgo.Record
		// wantReason is the end reason of the active campaigns; "" means
		// they stay active.
		wantReason string
		wantDead   int
	}{
		{name: "loan becomes current", batches: [][]*kgo.Record{{version(2, "CURRENT")}}, wantReason: events.ReasonLoanCurrent},
		{name: "loan status changes", batches: [][]*kgo.Record{{version(2, "PAID_OFF")}}, wantReason: events.ReasonLoanStatusChanged},
		{name: "loan removed", batches: [][]*kgo.Record{{version(2, "")}}, wantReason: events.ReasonLoanRemoved},
		{name: "tombstone", batches: [][]*kgo.Record{{tombstone()}}, wantReason: events.ReasonLoanRemoved},
		{name: "loan still behind", batches: [][]*kgo.Record{{version(2, "BEHIND")}}},
		{name: "older version ignored", batches: [][]*kgo.Record{{version(3, "BEHIND"), version(2, "CURRENT")}}},
		{name: "same version ignored", batches: [][]*kgo.Record{{version(1, "CURRENT")}}},
		{name: "redelivery applies once", batches: [][]*kgo.Record{{version(2, "CURRENT"), version(2, "CURRENT")}, {version(2, "CURRENT")}}, wantReason: events.ReasonLoanCurrent},
		{name: "tombstone redelivered", batches: [][]*kgo.Record{{tombstone()}, {tombstone()}}, wantReason: events.ReasonLoanRemoved},
		{
			name:    "malformed record dead-lettered, the rest applied",
			batches: [][]*kgo.Record{{record("doc_x", `{"id":"doc_x"}`), version(2, "CURRENT")}}, wantReason: events.ReasonLoanCurrent, wantDead: 1,
		},
		{
			// The read model was written, then the process stopped
			// before it ended the campaigns: the redelivery ends them.
			name: "stop between store and end repaired on redelivery",
			before: func(t *testing.T, f *fixture) {
				doc := campaign.Document{ID: "doc_x", AccountID: owner.AccountID, Loan: &campaign.Loan{Status: "CURRENT"}, Version: 2}
				if _, err := f.store.ApplyDocument(context.Background(), doc, time.Now()); err != nil {
					t.Fatal(err)
				}
			},
			batches: [][]*kgo.Record{{version(2, "CURRENT")}}, wantReason: events.ReasonLoanCurrent,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newFixture(t)
			f.handle(t, version(1, "BEHIND"))
			active := []string{f.start(t), f.start(t)}
			stopped := f.start(t)
			if _, err := f.app.OptOut(ctx, app.Request{Principal: owner}, app.OptOutInput{DocumentID: "doc_x", CampaignID: stopped, Channel: campaign.All}); err != nil {
				t.Fatal(err)
			}
			if tt.before != nil {
				tt.before(t, f)
			}
			for _, b := range tt.batches {
				f.handle(t, b...)
			}

			for _, id := range active {
				c, err := f.store.Get(ctx, owner.AccountID, "doc_x", id)
				if err != nil {
					t.Fatal(err)
				}
				if tt.wantReason == "" && (!c.Active || c.EndReason != "") {
					t.Fatalf("campaign %s: active=%v ended %q, want it still active", id, c.Active, c.EndReason)
				}
				if tt.wantReason != "" && (c.Active || c.EndReason != tt.wantReason || c.EndedAt.IsZero() || len(c.ActiveChannels) != 0) {
					t.Fatalf("campaign %s: active=%v ended %q at %v, want ended with %q", id, c.Active, c.EndReason, c.EndedAt, tt.wantReason)
				}
			}
			if c, err := f.store.Get(ctx, owner.AccountID, "doc_x", stopped); err != nil || c.EndReason != "" {
				t.Fatalf("the campaign opted out of everything: %+v %v, want it left as it was", c, err)
			}
			wantEnded := 0
			if tt.wantReason != "" {
				wantEnded = len(active)
			}
			inOutbox := apptest.Outbox(t, f.store, events.TypeCampaignEnded)
			if got := f.relay.Count(events.TypeCampaignEnded); got != wantEnded || inOutbox != wantEnded {
				t.Fatalf("%d campaign_ended handed to the relay and %d in the outbox, want %d", got, inOutbox, wantEnded)
			}
			if got := f.counter(t, "rcm_campaigns_ended_total"); got != float64(wantEnded) {
				t.Fatalf("rcm_campaigns_ended_total is %v, want %d", got, wantEnded)
			}
			if len(f.dlq.keys) != tt.wantDead {
				t.Fatalf("dead-lettered %v, want %d records", f.dlq.keys, tt.wantDead)
			}
		})
	}
}

// TestApplyKeepsTheReadModel: versions and tombstones as the start of a
// campaign sees them.
func TestApplyKeepsTheReadModel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	steps := []struct {
		batch       []*kgo.Record
		wantVersion int64 // 0: not visible
	}{
		{[]*kgo.Record{version(2, "BEHIND")}, 2},
		{[]*kgo.Record{version(1, "CURRENT")}, 2},
		{[]*kgo.Record{tombstone()}, 0},
		{[]*kgo.Record{version(2, "BEHIND")}, 0}, // not newer than the deleted one
		{[]*kgo.Record{version(3, "BEHIND")}, 3},
	}
	for i, s := range steps {
		f.handle(t, s.batch...)
		doc, err := f.store.Document(ctx, owner.AccountID, "doc_x")
		switch {
		case s.wantVersion == 0 && !errors.Is(err, campaign.ErrNotFound):
			t.Fatalf("step %d: got %+v %v, want the document deleted", i, doc, err)
		case s.wantVersion != 0 && (err != nil || doc.Version != s.wantVersion):
			t.Fatalf("step %d: got %+v %v, want version %d", i, doc, err, s.wantVersion)
		}
	}
}

// TestDeadLetterFailureStopsTheBatch: a record is handled only once it
// is dead-lettered; until then the batch fails and nothing after it runs.
func TestDeadLetterFailureStopsTheBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.dlq.fail = errors.New("broker unreachable")
	err := f.consumer.Handle(context.Background(), "documents.v1", 0, []*kgo.Record{record("doc_x", `not json`), version(1, "BEHIND")})
	if !errors.Is(err, f.dlq.fail) {
		t.Fatalf("got %v, want the dead-letter failure", err)
	}
	if _, err := f.store.AnyDocument(context.Background(), "doc_x"); !errors.Is(err, campaign.ErrNotFound) {
		t.Fatalf("the record after the failed one was applied (%v)", err)
	}
}
