package idempotency_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newStore(t *testing.T) (*idempotency.Store, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 4, 27, 10, 0, 0, 0, time.UTC)}
	s := idempotency.New(mongotest.Client(t).Database(mongotest.NewDatabase(t)), c.now)
	s.Wait = 300 * time.Millisecond
	return s, c
}

// newReplicas returns two Stores on one database, each with its own
// client, as two campaign processes have.
func newReplicas(t *testing.T) (*idempotency.Store, *idempotency.Store) {
	t.Helper()
	c := &clock{t: time.Date(2026, 4, 27, 10, 0, 0, 0, time.UTC)}
	db := mongotest.NewDatabase(t)
	a := idempotency.New(mongotest.Client(t).Database(db), c.now)
	b := idempotency.New(mongotest.Client(t).Database(db), c.now)
	a.Wait, b.Wait = 300*time.Millisecond, 300*time.Millisecond
	return a, b
}

func TestBegin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, c := newStore(t)
	fp := idempotency.Fingerprint("POST", "/v1/documents/d/rcm", []byte(`{"sms":true}`))

	rec, out, err := s.Begin(ctx, "org_a", "k1", fp, "rcm_first")
	if err != nil || out != idempotency.Fresh {
		t.Fatalf("first: got %v %v, want Fresh", out, err)
	}
	// A duplicate while the first is running waits, then is told so.
	if _, _, err := s.Begin(ctx, "org_a", "k1", fp, "rcm_second"); !errors.Is(err, idempotency.ErrInProgress) {
		t.Fatalf("duplicate in flight: got %v, want ErrInProgress", err)
	}
	if err := s.Finish(ctx, rec, 201, []byte(`{"campaign":{"id":"rcm_first"}}`)); err != nil {
		t.Fatal(err)
	}
	got, out, err := s.Begin(ctx, "org_a", "k1", fp, "rcm_third")
	if err != nil || out != idempotency.Replay || got.Status != 201 || got.CampaignID != "rcm_first" {
		t.Fatalf("retry: got %+v %v %v, want the first answer replayed", got, out, err)
	}
	if _, _, err := s.Begin(ctx, "org_a", "k1", "another body", "rcm_x"); !errors.Is(err, idempotency.ErrMismatch) {
		t.Fatalf("other body: got %v, want ErrMismatch", err)
	}
	if _, out, err := s.Begin(ctx, "org_b", "k1", fp, "rcm_b"); err != nil || out != idempotency.Fresh {
		t.Fatalf("other account: got %v %v, want Fresh", out, err)
	}
	c.add(idempotency.Window + time.Minute)
	if rec, out, err := s.Begin(ctx, "org_a", "k1", "another body", "rcm_new"); err != nil || out != idempotency.Fresh || rec.CampaignID != "rcm_new" {
		t.Fatalf("after the window: got %+v %v %v, want Fresh", rec, out, err)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: got %d %v, want the expired org_b claim deleted", n, err)
	}
}

// TestAbandonedClaimIsRecovered: a request that died between its claim and
// its answer leaves the claim pending; once stale, a retry recovers it with
// the campaign id chosen the first time.
func TestAbandonedClaimIsRecovered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, c := newStore(t)
	if _, _, err := s.Begin(ctx, "org_a", "k", "fp", "rcm_chosen"); err != nil {
		t.Fatal(err)
	}
	c.add(s.Stale)
	rec, out, err := s.Begin(ctx, "org_a", "k", "fp", "rcm_other")
	if err != nil || out != idempotency.Recover || rec.CampaignID != "rcm_chosen" {
		t.Fatalf("got %+v %v %v, want Recover of rcm_chosen", rec, out, err)
	}
	// The recovering request holds the claim now.
	if _, _, err := s.Begin(ctx, "org_a", "k", "fp", "rcm_third"); !errors.Is(err, idempotency.ErrInProgress) {
		t.Fatalf("got %v, want ErrInProgress", err)
	}
	// A claim released after a failure that wrote nothing is simply new
	// again.
	s.Release(ctx, rec)
	if _, out, err := s.Begin(ctx, "org_a", "k", "fp", "rcm_fourth"); err != nil || out != idempotency.Fresh {
		t.Fatalf("after abandon: got %v %v, want Fresh", out, err)
	}
}

// TestInterruptedClaimIsRecoveredAtOnce: a command that failed after it
// may have written keeps its claim; the next request recovers it at once,
// with the campaign id chosen the first time, and only one of two
// concurrent retries does, also when they reach two replicas.
func TestInterruptedClaimIsRecoveredAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, other := newReplicas(t)
	rec, _, err := s.Begin(ctx, "org_a", "k", "fp", "rcm_chosen")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Interrupt(ctx, rec); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var recovered []idempotency.Record
	var busy int
	for _, replica := range []*idempotency.Store{s, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, out, err := replica.Begin(ctx, "org_a", "k", "fp", "rcm_other")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && out == idempotency.Recover:
				recovered = append(recovered, got)
			case errors.Is(err, idempotency.ErrInProgress):
				busy++
			default:
				t.Errorf("got %v %v, want Recover or ErrInProgress", out, err)
			}
		}()
	}
	wg.Wait()
	if len(recovered) != 1 || busy != 1 || recovered[0].CampaignID != "rcm_chosen" {
		t.Fatalf("got %d recoveries %+v and %d told in progress, want one Recover of rcm_chosen", len(recovered), recovered, busy)
	}
	// An interrupted recovery is recovered again.
	if err := s.Interrupt(ctx, recovered[0]); err != nil {
		t.Fatal(err)
	}
	if got, out, err := s.Begin(ctx, "org_a", "k", "fp", "rcm_third"); err != nil || out != idempotency.Recover || got.CampaignID != "rcm_chosen" {
		t.Fatalf("got %+v %v %v, want Recover of rcm_chosen", got, out, err)
	}
}

func TestConcurrentClaimsHaveOneWinner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, out, err := s.Begin(ctx, "org_c", "same", "fp", "rcm_c")
			if err == nil && out == idempotency.Fresh {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if fresh != 1 {
		t.Fatalf("got %d fresh claims, want exactly 1", fresh)
	}
}
