package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// BenchmarkAppend appends batches of 100 opt-outs to one account, as the
// consumer does with a partition's poll, beside raw ordered InsertMany
// batches of the same entries (chain computed beforehand); it reports
// entries/s and the store commands per entry. Their ratio is the cost of
// the ledger (head, chain, tree) over the bare insert.
func BenchmarkAppend(b *testing.B) {
	const batch = 100
	evs := optOuts(b, "org_bench", batch)

	b.Run("ledger", func(b *testing.B) {
		ctx := context.Background()
		counts := &storeCommands{}
		cl := mongotest.MonitoredClient(b, counts.monitor())
		l := ledger.New(ledger.Config{DB: cl.Database(mongotest.NewDatabase(b)), Now: time.Now})
		if err := l.EnsureIndexes(ctx); err != nil {
			b.Fatal(err)
		}
		i := 0
		before := counts.entries.Load() + counts.tree.Load()
		start := time.Now()
		for b.Loop() {
			// Fresh event ids per batch: every entry is new.
			next := make([]ledger.Event, batch)
			for j, e := range evs {
				e.EventID = fmt.Sprintf("evt_%08d_%03d", i, j)
				next[j] = e
			}
			if _, err := l.Append(ctx, "org_bench", next); err != nil {
				b.Fatal(err)
			}
			i++
		}
		n := float64(b.N * batch)
		b.ReportMetric(n/time.Since(start).Seconds(), "entries/s")
		b.ReportMetric(float64(counts.entries.Load()+counts.tree.Load()-before)/n, "commands/entry")
	})

	b.Run("raw InsertMany", func(b *testing.B) {
		ctx := context.Background()
		coll := mongotest.Client(b).Database(mongotest.NewDatabase(b)).Collection(auditlog.EntriesCollection)
		prev, seq := auditlog.GenesisHash, int64(0)
		i := 0
		start := time.Now()
		for b.Loop() {
			docs := make([]any, 0, batch)
			for j, ev := range evs {
				seq++
				e := auditlog.Entry{
					EventID: fmt.Sprintf("evt_%08d_%03d", i, j), AccountID: "org_bench", Seq: seq, EventType: ev.EventType,
					DocumentID: ev.DocumentID, CampaignID: ev.CampaignID,
					Actor: auditlog.Actor{Type: ev.Actor.Type, ID: ev.Actor.ID, SessionID: ev.Actor.SessionID},
					Data:  json.RawMessage(ev.Data), OccurredAt: ev.OccurredAt, RecordedAt: ev.OccurredAt,
				}
				if err := auditlog.Seal(&e, prev); err != nil {
					b.Fatal(err)
				}
				prev = e.Hash
				d, err := auditlog.ToDoc(e, seqlog.Key("org_bench", seq))
				if err != nil {
					b.Fatal(err)
				}
				docs = append(docs, d)
			}
			if _, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(true)); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "entries/s")
	})
}
