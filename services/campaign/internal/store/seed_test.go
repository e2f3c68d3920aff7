package store_test

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/campaignseed"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The benchmarks fill the store with campaignseed's records instead of
// starting campaigns one by one: they must be exactly what the service
// writes, field for field, and read back as the service's own.
func TestSeededRecordsAreWhatTheServiceWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl, err := mongox.Connect(mongotest.URI(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	written, seeded := cl.Database(mongotest.NewDatabase(t)), cl.Database(mongotest.NewDatabase(t))
	s := store.New(written)
	if err := s.EnsureIndexes(ctx); err != nil {
		t.Fatal(err)
	}
	published := &publishedSet{}
	s.TakeOutPublished(published)

	at := time.Now().UTC().Truncate(time.Millisecond)
	doc := behind("doc_seed", "org_seed")
	doc.Borrower = campaign.Borrower{TimeZone: "America/Chicago", State: "MA"}
	if _, err := s.ApplyDocument(ctx, doc, at); err != nil {
		t.Fatal(err)
	}
	// And one the read model holds with no campaign.
	bare := campaign.Document{ID: "doc_bare", AccountID: "org_seed", Loan: &campaign.Loan{Status: "CURRENT"}, Version: 3}
	if _, err := s.ApplyDocument(ctx, bare, at); err != nil {
		t.Fatal(err)
	}
	inputs := []campaign.StartInput{
		{SMS: true, Email: true, Tone: "professional", Cadence: "day 1, day 5", Notes: "Responded well to SMS."},
		{Call: true, Tone: "firm", Cadence: "weekly"},
		{SMS: true, Email: true, Call: true, Tone: "kind", Cadence: "daily", Notes: "n"},
	}
	var started []campaignseed.Campaign
	var pending []events.Message
	for i, in := range inputs {
		c, e, err := campaign.Start(in, doc, user, gen.New, at.Add(time.Duration(i+1)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		c, m, err := s.Create(ctx, c, e)
		if err != nil {
			t.Fatal(err)
		}
		// The relay published the first events, not yet the last: the
		// next start's write took each out of the outbox.
		if i < len(inputs)-1 {
			published.add(doc.ID, m.ID)
		} else {
			pending = append(pending, m)
		}
		started = append(started, campaignseed.Campaign{
			ID: c.ID, AccountID: c.AccountID, DocumentID: c.DocumentID, SMS: c.SMS, Email: c.Email, Call: c.Call,
			Tone: c.Tone, Cadence: c.Cadence, Notes: c.Notes, CreatedBy: c.CreatedBy, CreatedAt: c.CreatedAt,
		})
	}

	rec := campaignseed.Record(campaignseed.Document{ID: doc.ID, AccountID: doc.AccountID, LoanStatus: doc.Loan.Status,
		TimeZone: doc.Borrower.TimeZone, State: doc.Borrower.State, Version: doc.Version, UpdatedAt: at,
		Campaigns: started, Outbox: pending})
	bareRec := campaignseed.Record(campaignseed.Document{ID: bare.ID, AccountID: bare.AccountID, LoanStatus: "CURRENT", Version: 3, UpdatedAt: at})
	if _, err := seeded.Collection(campaignseed.DocumentsCollection).InsertMany(ctx, []any{rec, bareRec}); err != nil {
		t.Fatal(err)
	}

	for _, coll := range []string{campaignseed.CampaignsCollection, campaignseed.DocumentsCollection} {
		got, want := stored(t, seeded.Collection(coll)), stored(t, written.Collection(coll))
		if !reflect.DeepEqual(got, want) {
			g, _ := json.MarshalIndent(got, "", " ")
			w, _ := json.MarshalIndent(want, "", " ")
			t.Errorf("%s: seeded\n%s\nwant what the service wrote\n%s", coll, g, w)
		}
	}

	fromSeed, err := store.New(seeded).ListByDocument(ctx, doc.AccountID, doc.ID, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	fromService, err := s.ListByDocument(ctx, doc.AccountID, doc.ID, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(fromService) != len(inputs) || !reflect.DeepEqual(fromSeed, fromService) {
		t.Fatalf("the seeded campaigns read back as\n%+v\nwant the service's\n%+v", fromSeed, fromService)
	}
}

// publishedSet is the relay's side of the store's writes (store.Published):
// the events added are published, and leave with the next write.
type publishedSet struct {
	mu  sync.Mutex
	ids map[string][]string
}

func (p *publishedSet) add(documentID, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ids == nil {
		p.ids = map[string][]string{}
	}
	p.ids[documentID] = append(p.ids[documentID], id)
}

func (p *publishedSet) Published(documentID string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids[documentID])
}

func (p *publishedSet) TakenOut(documentID string, ids []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids[documentID] = slices.DeleteFunc(p.ids[documentID], func(id string) bool { return slices.Contains(ids, id) })
}

// stored returns every document of coll as order-insensitive JSON values
// (relaxed extended JSON), by _id.
func stored(t *testing.T, coll *mongo.Collection) map[string]any {
	t.Helper()
	cur, err := coll.Find(context.Background(), bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var docs []bson.Raw
	if err := cur.All(context.Background(), &docs); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	for _, d := range docs {
		js, err := bson.MarshalExtJSON(d, false, false)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(js, &v); err != nil {
			t.Fatal(err)
		}
		out[d.Lookup("_id").StringValue()] = v
	}
	return out
}
