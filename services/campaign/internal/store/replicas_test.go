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
// start is kept, and every campaign is listed once on its document.
func TestTwoReplicasLoseNothing(t *testing.T) {
	t.Parallel()
	rs := replicas(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	doc := behind("doc_two", "org_two")
	c := start(t, rs[0], doc)

	channels := []campaign.Channel{campaign.SMS, campaign.Email, campaign.Call}
	const optOuts, starts = 24, 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted, started []string
	for i := range optOuts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, msgs, err := rs[i%2].Update(ctx, "org_two", c.ID, func(c *campaign.Campaign) ([]events.Event, error) {
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
			c, e, err := campaign.Start(campaign.StartInput{SMS: true, Tone: "t", Cadence: "c"}, doc, user, gen.New, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := rs[i%2].Create(ctx, c, e); err != nil {
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

	got, err := rs[1].Get(ctx, "org_two", c.ID)
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
