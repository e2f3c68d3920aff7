package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
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

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

var (
	gen  = ids.NewGenerator(time.Now)
	user = events.Actor{Type: events.ActorUser, ID: "user_1", SessionID: "sess_1"}
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	cl, err := mongox.Connect(mongotest.URI(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	s := store.New(cl.Database(mongotest.NewDatabase(t)))
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func behind(id, account string) campaign.Document {
	return campaign.Document{ID: id, AccountID: account, Loan: &campaign.Loan{Status: "BEHIND"}, Version: 1}
}

func start(t *testing.T, s *store.Store, doc campaign.Document) campaign.Campaign {
	t.Helper()
	return startWith(t, s, doc, campaign.StartInput{SMS: true, Email: true, Call: true, Tone: "t", Cadence: "c"})
}

func startWith(t *testing.T, s *store.Store, doc campaign.Document, in campaign.StartInput) campaign.Campaign {
	t.Helper()
	c, e, err := campaign.Start(in, doc, user, gen.New, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, _, err = s.Create(context.Background(), c, e)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGetIsScopedToTheAccount(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	c := start(t, s, behind("doc_a", "org_a"))
	got, err := s.Get(ctx, "org_a", c.DocumentID, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != c.ID || !got.Active || !slices.Equal(got.ActiveChannels, c.ActiveChannels) || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Fatalf("got %+v, want %+v", got, c)
	}
	if _, err := s.Get(ctx, "org_b", c.DocumentID, c.ID); !errors.Is(err, campaign.ErrNotFound) {
		t.Fatalf("other account: got %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "org_a", c.DocumentID, gen.New(ids.CampaignPrefix)); !errors.Is(err, campaign.ErrNotFound) {
		t.Fatalf("missing: got %v, want ErrNotFound", err)
	}
	if _, _, err := s.Update(ctx, "org_b", c.DocumentID, c.ID, func(*campaign.Campaign) ([]events.Event, error) {
		t.Error("mutation ran for another account")
		return nil, nil
	}); !errors.Is(err, campaign.ErrNotFound) {
		t.Fatalf("update by other account: got %v, want ErrNotFound", err)
	}
}

// TestConcurrentOptOutsLoseNone fires many opt-outs at one campaign at once
// and checks that the campaign and its outbox account for every one. The
// embedded store loses concurrent updates of one document on its own; the
// store must not.
func TestConcurrentOptOutsLoseNone(t *testing.T) {
	t.Parallel()
	concurrentOptOuts(t, newStore(t))
}

func concurrentOptOuts(t *testing.T, s *store.Store) {
	ctx := context.Background()
	c := start(t, s, behind("doc_c", "org_c"))
	channels := []campaign.Channel{campaign.SMS, campaign.Email, campaign.Call, campaign.SMS, campaign.SMS, campaign.Email}
	const perChannel = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted []string
	for i := 0; i < perChannel; i++ {
		for _, ch := range channels {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, msgs, err := s.Update(ctx, "org_c", c.DocumentID, c.ID, func(c *campaign.Campaign) ([]events.Event, error) {
					e, err := c.OptOut(ch, fmt.Sprintf("request %d", i), user, gen.New(ids.EventPrefix), time.Now())
					return []events.Event{e}, err
				})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				accepted = append(accepted, msgs[0].ID)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	want := perChannel * len(channels)
	if len(accepted) != want {
		t.Fatalf("got %d accepted opt-outs, want %d", len(accepted), want)
	}
	got, err := s.Get(ctx, "org_c", c.DocumentID, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.OptOuts) != want {
		t.Fatalf("got %d opt-outs stored, want %d", len(got.OptOuts), want)
	}
	if got.Active || len(got.ActiveChannels) != 0 {
		t.Fatalf("got active=%v channels=%v, want every channel opted out", got.Active, got.ActiveChannels)
	}
	pending, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var outbox []string
	for _, p := range pending {
		if p.CampaignID == c.ID && p.Type == events.TypeOptOut {
			outbox = append(outbox, p.ID)
		}
	}
	slices.Sort(outbox)
	slices.Sort(accepted)
	if !slices.Equal(outbox, accepted) {
		t.Fatalf("outbox holds %d opt-out events, want exactly the %d accepted", len(outbox), len(accepted))
	}
}

func TestRemoveFromOutbox(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	c := start(t, s, behind("doc_r", "org_r"))
	_, msgs, err := s.Update(ctx, "org_r", c.DocumentID, c.ID, func(c *campaign.Campaign) ([]events.Event, error) {
		e, err := c.OptOut(campaign.SMS, "", user, gen.New(ids.EventPrefix), time.Now())
		return []events.Event{e}, err
	})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 2 || pending[0].Type != events.TypeCampaignStarted || pending[1].ID != msgs[0].ID {
		t.Fatalf("got pending %v, want the start then the opt-out", pending)
	}
	// As the sweep read it from the store.
	if err := s.RemoveFromOutbox(ctx, c.DocumentID, []events.Message{pending[0].Message}); err != nil {
		t.Fatal(err)
	}
	pending, err = s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].ID != msgs[0].ID {
		t.Fatalf("got pending %v, want only the opt-out", pending)
	}
	if err := events.ValidateData(pending[0].Data); err != nil {
		t.Fatalf("stored event: %v", err)
	}
	// As the command handed it to the relay.
	if err := s.RemoveFromOutbox(ctx, c.DocumentID, msgs); err != nil {
		t.Fatal(err)
	}
	if pending, err = s.Pending(ctx); err != nil || len(pending) != 0 {
		t.Fatalf("got pending %v %v, want none", pending, err)
	}
}

// TestRemoveFromOutboxes: one removal across records takes from each the
// events named for it, and only those.
func TestRemoveFromOutboxes(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	a, b, kept := start(t, s, behind("doc_ra", "org_r")), start(t, s, behind("doc_rb", "org_r")), start(t, s, behind("doc_rc", "org_r"))
	pending, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch := map[string][]events.Message{}
	for _, p := range pending {
		if p.DocumentID != kept.DocumentID {
			batch[p.DocumentID] = append(batch[p.DocumentID], p.Message)
		}
	}
	if len(batch[a.DocumentID]) != 1 || len(batch[b.DocumentID]) != 1 {
		t.Fatalf("pending %v: want one event of each record", pending)
	}
	if err := s.RemoveFromOutboxes(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Sent again, as after a failure whose removal landed: nothing more.
	if err := s.RemoveFromOutboxes(ctx, batch); err != nil {
		t.Fatal(err)
	}
	pending, err = s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].DocumentID != kept.DocumentID {
		t.Fatalf("got pending %v, want only the event of %s", pending, kept.DocumentID)
	}
}

func TestApplyDocumentVersions(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	now := time.Now()
	steps := []struct {
		name        string
		apply       func() (bool, error)
		wantApplied bool
		wantStatus  string // "" = no loan; "-" = not found (deleted or absent)
	}{
		{"first", func() (bool, error) { return s.ApplyDocument(ctx, behind("doc_v", "org_v"), now) }, true, "BEHIND"},
		{"same version", func() (bool, error) {
			d := behind("doc_v", "org_v")
			d.Loan.Status = "CURRENT"
			return s.ApplyDocument(ctx, d, now)
		}, false, "BEHIND"},
		{"newer", func() (bool, error) {
			return s.ApplyDocument(ctx, campaign.Document{ID: "doc_v", AccountID: "org_v", Loan: &campaign.Loan{Status: "CURRENT"}, Version: 5}, now)
		}, true, "CURRENT"},
		{"older", func() (bool, error) {
			return s.ApplyDocument(ctx, campaign.Document{ID: "doc_v", AccountID: "org_v", Version: 4}, now)
		}, false, "CURRENT"},
		{"tombstone", func() (bool, error) { return s.DeleteDocument(ctx, "doc_v", now) }, true, "-"},
		{"tombstone again", func() (bool, error) { return s.DeleteDocument(ctx, "doc_v", now) }, false, "-"},
		{"not newer than the deleted one", func() (bool, error) { return s.ApplyDocument(ctx, behind("doc_v", "org_v"), now) }, false, "-"},
		{"newer revives", func() (bool, error) {
			return s.ApplyDocument(ctx, campaign.Document{ID: "doc_v", AccountID: "org_v", Version: 6}, now)
		}, true, ""},
	}
	for _, st := range steps {
		applied, err := st.apply()
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if applied != st.wantApplied {
			t.Fatalf("%s: got applied %v, want %v", st.name, applied, st.wantApplied)
		}
		doc, err := s.Document(ctx, "org_v", "doc_v")
		switch {
		case st.wantStatus == "-":
			if !errors.Is(err, campaign.ErrNotFound) {
				t.Fatalf("%s: got %+v %v, want not found", st.name, doc, err)
			}
		case err != nil:
			t.Fatalf("%s: %v", st.name, err)
		case st.wantStatus == "" && doc.Loan != nil, st.wantStatus != "" && (doc.Loan == nil || doc.Loan.Status != st.wantStatus):
			t.Fatalf("%s: got loan %+v, want %q", st.name, doc.Loan, st.wantStatus)
		}
	}
	if _, err := s.Document(ctx, "org_other", "doc_v"); !errors.Is(err, campaign.ErrNotFound) {
		t.Fatalf("other account: got %v, want ErrNotFound", err)
	}
}

// TestApplyDocumentBorrower: a document's borrower is stored and read
// back; a newer version without one (a producer that does not send it)
// still applies and leaves none.
func TestApplyDocumentBorrower(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	now := time.Now()
	doc := behind("doc_b", "org_b")
	doc.Borrower = campaign.Borrower{TimeZone: "America/Chicago", State: "MA"}
	steps := []struct {
		name string
		doc  campaign.Document
	}{
		{"with a borrower", doc},
		{"a newer one with a time zone only", campaign.Document{ID: "doc_b", AccountID: "org_b", Loan: doc.Loan, Version: 2,
			Borrower: campaign.Borrower{TimeZone: "America/New_York"}}},
		{"a newer one without", campaign.Document{ID: "doc_b", AccountID: "org_b", Loan: doc.Loan, Version: 3}},
		{"a newer one with a state only", campaign.Document{ID: "doc_b", AccountID: "org_b", Loan: doc.Loan, Version: 4,
			Borrower: campaign.Borrower{State: "TX"}}},
	}
	for _, st := range steps {
		if applied, err := s.ApplyDocument(ctx, st.doc, now); err != nil || !applied {
			t.Fatalf("%s: applied %v, %v", st.name, applied, err)
		}
		got, err := s.Document(ctx, "org_b", "doc_b")
		if err != nil {
			t.Fatal(err)
		}
		if got.Borrower != st.doc.Borrower || got.Version != st.doc.Version {
			t.Fatalf("%s: read back %+v, want borrower %+v at v%d", st.name, got, st.doc.Borrower, st.doc.Version)
		}
	}
	// A first version without a borrower reads back with none.
	if applied, err := s.ApplyDocument(ctx, behind("doc_old", "org_b"), now); err != nil || !applied {
		t.Fatalf("applied %v, %v", applied, err)
	}
	if got, err := s.Document(ctx, "org_b", "doc_old"); err != nil || got.Borrower != (campaign.Borrower{}) {
		t.Fatalf("got %+v, %v; want no borrower", got, err)
	}
}

func TestConcurrentIdenticalDocumentUpdatesApplyOnce(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	doc := campaign.Document{ID: "doc_same", AccountID: "org_s", Loan: &campaign.Loan{Status: "CURRENT"}, Version: 7}
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.ApplyDocument(ctx, doc, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			if ok {
				mu.Lock()
				applied++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if applied != 1 {
		t.Fatalf("got %d applies, want exactly 1", applied)
	}
}

func TestListByDocumentPagesNewestFirst(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	var made []string
	for i := 0; i < 5; i++ {
		made = append(made, start(t, s, behind("doc_l", "org_l")).ID)
	}
	start(t, s, behind("doc_other", "org_l"))
	start(t, s, behind("doc_l", "org_intruder"))
	slices.Reverse(made)
	var got []string
	cursor := ""
	for page := 0; page < 5; page++ {
		cs, err := s.ListByDocument(ctx, "org_l", "doc_l", cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			got = append(got, c.ID)
		}
		if len(cs) < 2 {
			break
		}
		cursor = cs[len(cs)-1].ID
	}
	if !slices.Equal(got, made) {
		t.Fatalf("got %v, want %v", got, made)
	}
}

// TestPageByDocument: pages carry the cursor of the next one, and the
// last page none, also when it is full.
func TestPageByDocument(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	var made []string
	for i := 0; i < 4; i++ {
		made = append(made, start(t, s, behind("doc_p", "org_p")).ID)
	}
	slices.Reverse(made)
	tests := []struct {
		name     string
		cursor   string
		limit    int
		want     []string
		wantNext string
	}{
		{"first page", "", 3, made[:3], made[2]},
		{"last page", made[2], 3, made[3:], ""},
		{"full last page", made[1], 2, made[2:], ""},
		{"all at once", "", 4, made, ""},
		{"unknown cursor", "rcm_unknown", 2, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := s.PageByDocument(ctx, "org_p", "doc_p", tt.cursor, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range p.Campaigns {
				got = append(got, c.ID)
			}
			if !slices.Equal(got, tt.want) || p.Next != tt.wantNext {
				t.Fatalf("got %v next %q, want %v next %q", got, p.Next, tt.want, tt.wantNext)
			}
		})
	}
	for _, account := range []struct {
		id   string
		want bool
	}{{"org_p", true}, {"org_other", false}} {
		if has, err := s.HasCampaigns(ctx, account.id, "doc_p"); err != nil || has != account.want {
			t.Fatalf("HasCampaigns(%s): got %v %v, want %v", account.id, has, err, account.want)
		}
	}
}

// TestCampaignListedOnce: a start retried with the campaign id it chose
// lists that campaign once on its document, however often it ran.
func TestCampaignListedOnce(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	doc := behind("doc_once", "org_once")
	c, e, err := campaign.Start(campaign.StartInput{Call: true, Tone: "t", Cadence: "c"}, doc, user, gen.New, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(ctx, c, e); err != nil {
		t.Fatal(err)
	}
	_, _, again := s.Create(ctx, c, e)
	listed, err := s.ListByDocument(ctx, "org_once", doc.ID, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].ID != c.ID {
		t.Fatalf("the document lists %d campaigns, want %s once", len(listed), c.ID)
	}
	if !errors.Is(again, store.ErrExists) {
		t.Fatalf("second insert of %s: got %v, want ErrExists", c.ID, again)
	}
}
