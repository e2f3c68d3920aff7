package principal

import (
	"context"
	"sync"
	"time"
)

// Nonces remembers the nonces of the principals a service accepted, for as
// long as those principals could still verify.
type Nonces interface {
	// Claim records nonce, whose principal expires at expires; it returns
	// ErrReplayed when the nonce was claimed before.
	Claim(ctx context.Context, nonce string, expires time.Time) error
}

// MemoryNonces holds the nonces in this process. It is the guard of reads:
// a read changes nothing, so a replay sent to another replica within the
// minute can at most read again what the captured request read, and
// someone who captured the request on the internal network saw its answer
// too. A store write on every read (and for every SSE stream) would cost
// more than that is worth.
type MemoryNonces struct {
	now func() time.Time

	mu      sync.Mutex
	seen    map[string]time.Time
	pruneAt time.Time
}

// NewMemoryNonces returns an empty guard reading time from now.
func NewMemoryNonces(now func() time.Time) *MemoryNonces {
	return &MemoryNonces{now: now, seen: map[string]time.Time{}}
}

// Claim implements Nonces.
func (m *MemoryNonces) Claim(_ context.Context, nonce string, expires time.Time) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.After(m.pruneAt) {
		// What expired can no longer verify: forget it, at most twice per
		// TTL, so that the map holds about a TTL of requests.
		for n, exp := range m.seen {
			if now.After(exp) {
				delete(m.seen, n)
			}
		}
		m.pruneAt = now.Add(TTL / 2)
	}
	if _, ok := m.seen[nonce]; ok {
		return ErrReplayed
	}
	m.seen[nonce] = expires
	return nil
}
