package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// replicas returns n stores on one database, each with its own client, as
// n campaign processes would have.
func replicas(t *testing.T, n int) []*store.Store {
	t.Helper()
	db := mongotest.NewDatabase(t)
	var out []*store.Store
	for range n {
		cl, err := mongox.Connect(mongotest.URI(t), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
		s := store.New(cl.Database(db))
		if err := s.EnsureIndexes(context.Background()); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// TestTwoReplicasLoseNothing: two processes writing one campaign and one
// document at once, each through its own client: every opt-out and every
// start is kept, and every campaign is listed once on its document. The
// opt-outs revoke sms and email on the document, so the starts ask for
// calls: a start of revoked channels only records nothing.
func TestTwoReplicasLoseNothing(t *testing.T) {
	t.Parallel()
	rs := replicas(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	doc := behind("doc_two", "org_two")
	c := startWith(t, rs[0], doc, campaign.StartInput{SMS: true, Email: true, Tone: "t", Cadence: "c"})

	channels := []campaign.Channel{campaign.SMS, campaign.Email}
	const optOuts, starts = 24, 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted, started []string
	for i := range optOuts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, msgs, err := rs[i%2].Update(ctx, "org_two", c.DocumentID, c.ID, func(c *campaign.Campaign) ([]events.Event, error) {
				e, err := c.OptOut(channels[i%len(channels)], fmt.Sprintf("request %d", i), user, gen.New(ids.EventPrefix), time.Now())
				return []events.Event{e}, err
			})
			if err != nil {
				t.Errorf("opt-out %d: %v", i, err)
				return
			}
			mu.Lock()
			accepted = append(accepted, msgs[0].ID)
			mu.Unlock()
		}()
	}
	for i := range starts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, e, err := campaign.Start(campaign.StartInput{Call: true, Tone: "t", Cadence: "c"}, doc, user, gen.New, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			if _, _, err := rs[i%2].Create(ctx, c, e); err != nil {
				t.Errorf("start %d: %v", i, err)
				return
			}
			mu.Lock()
			started = append(started, c.ID)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	got, err := rs[1].Get(ctx, "org_two", c.DocumentID, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for _, o := range got.OptOuts {
		stored = append(stored, o.EventID)
	}
	pending, err := rs[0].Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var outbox []string
	for _, p := range pending {
		if p.CampaignID == c.ID && p.Type == events.TypeOptOut {
			outbox = append(outbox, p.ID)
		}
	}
	slices.Sort(accepted)
	slices.Sort(stored)
	slices.Sort(outbox)
	if !slices.Equal(stored, accepted) || !slices.Equal(outbox, accepted) {
		t.Fatalf("of %d accepted opt-outs the campaign holds %d and its outbox %d", len(accepted), len(stored), len(outbox))
	}
	if got.Active || len(got.ActiveChannels) != 0 {
		t.Fatalf("got active=%v channels=%v, want every channel opted out", got.Active, got.ActiveChannels)
	}

	listed, err := rs[1].ListByDocument(ctx, "org_two", doc.ID, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var listedIDs []string
	for _, l := range listed {
		listedIDs = append(listedIDs, l.ID)
	}
	want := append([]string{c.ID}, started...)
	slices.Sort(want)
	slices.Sort(listedIDs)
	if !slices.Equal(listedIDs, want) {
		t.Fatalf("the document lists %v, want each of %v once", listedIDs, want)
	}
}

// TestTwoReplicasRaceConsent: two processes recording opt-outs on two
// campaigns and consent changes of their document at once: none is lost,
// the consent's version counts every one, and the outbox holds each
// event once.
func TestTwoReplicasRaceConsent(t *testing.T) {
	t.Parallel()
	rs := replicas(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	doc := behind("doc_race", "org_race")
	if _, err := rs[0].ApplyDocument(ctx, doc, time.Now()); err != nil {
		t.Fatal(err)
	}
	cs := []campaign.Campaign{start(t, rs[0], doc), start(t, rs[1], doc)}
	channels := []campaign.Channel{campaign.SMS, campaign.Email, campaign.Call, campaign.All}
	statuses := []string{events.ConsentGranted, events.ConsentRevoked}

	const optOuts, changes = 16, 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted []string
	accept := func(msgs []events.Message) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			accepted = append(accepted, m.ID)
		}
	}
	for i := range optOuts {
		wg.Go(func() {
			c := cs[i%2]
			_, msgs, err := rs[i%2].Update(ctx, doc.AccountID, c.DocumentID, c.ID, func(c *campaign.Campaign) ([]events.Event, error) {
				e, err := c.OptOut(channels[i%len(channels)], "", user, gen.New(ids.EventPrefix), time.Now())
				return []events.Event{e}, err
			})
			if err != nil {
				t.Errorf("opt-out %d: %v", i, err)
				return
			}
			accept(msgs)
		})
	}
	for i := range changes {
		wg.Go(func() {
			_, msgs, err := rs[(i+1)%2].UpdateDocument(ctx, doc.AccountID, doc.ID, store.Nonce{}, func(r *store.Record) ([]events.Event, error) {
				id := gen.New(ids.EventPrefix)
				if err := r.Consent.Set(string(channels[i%len(channels)]), statuses[i%2], events.SourceConsent, id, time.Now()); err != nil {
					return nil, err
				}
				return []events.Event{events.NewConsentChanged(events.Head{EventID: id, AccountID: doc.AccountID, DocumentID: doc.ID, Actor: user, At: time.Now()},
					events.ConsentChangedData{Channel: string(channels[i%len(channels)]), Status: statuses[i%2], Basis: "b", Consent: r.Consent})}, nil
			})
			if err != nil {
				t.Errorf("consent change %d: %v", i, err)
				return
			}
			accept(msgs)
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	consent, err := rs[1].Consent(ctx, doc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if consent.Version != optOuts+changes {
		t.Fatalf("consent version %d, want %d: one per opt-out and consent change", consent.Version, optOuts+changes)
	}
	stored := 0
	for _, c := range cs {
		got, err := rs[0].Get(ctx, doc.AccountID, c.DocumentID, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		stored += len(got.OptOuts)
	}
	if stored != optOuts {
		t.Fatalf("the campaigns hold %d opt-outs, want %d", stored, optOuts)
	}
	pending, err := rs[0].Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var outbox []string
	for _, p := range pending {
		if p.DocumentID == doc.ID && (p.Type == events.TypeOptOut || p.Type == events.TypeConsentChanged) {
			outbox = append(outbox, p.ID)
		}
	}
	slices.Sort(outbox)
	slices.Sort(accepted)
	if !slices.Equal(outbox, accepted) {
		t.Fatalf("the outbox holds %d of the %d accepted events", len(outbox), len(accepted))
	}
}
