// Package apptest holds what the tests of the campaign use cases and of
// their callers share: a relay that records, and a store ready for a test.
package apptest

import (
	"context"
	"sync"
	"testing"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Relay stands in for the relay (tested on its own): it keeps what it
// was handed.
type Relay struct {
	mu     sync.Mutex
	msgs   []events.Message
	missed int
}

// Enqueue records msgs.
func (r *Relay) Enqueue(_ string, msgs ...events.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msgs...)
}

// Missed counts the calls.
func (r *Relay) Missed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.missed++
}

// Types returns the types of the events handed over, in order.
func (r *Relay) Types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.msgs))
	for _, m := range r.msgs {
		out = append(out, m.Type)
	}
	return out
}

// Count returns how many events of type typ were handed over.
func (r *Relay) Count(typ string) int {
	n := 0
	for _, t := range r.Types() {
		if t == typ {
			n++
		}
	}
	return n
}

// MissedCount returns how often Missed was called.
func (r *Relay) MissedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.missed
}

// NewStore returns a store on db (a fresh database of the test's), its
// indexes made.
func NewStore(t testing.TB, db *mongo.Database) *store.Store {
	t.Helper()
	s := store.New(db)
	if err := s.EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// Outbox returns how many events of type typ wait in s's outboxes.
func Outbox(t testing.TB, s *store.Store, typ string) int {
	t.Helper()
	pending, err := s.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range pending {
		if p.Type == typ {
			n++
		}
	}
	return n
}
