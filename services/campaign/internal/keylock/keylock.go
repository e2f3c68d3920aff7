// Package keylock serializes work per key inside one process: writes to one
// aggregate take its key's lock so that correctness never depends on the
// store's isolation of concurrent updates.
package keylock

import (
	"context"
	"sync"
)

// Map is a set of mutexes addressed by key; unused keys cost nothing.
type Map struct {
	mu    sync.Mutex
	locks map[string]*entry
}

type entry struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

// New returns an empty Map.
func New() *Map { return &Map{locks: map[string]*entry{}} }

// Lock waits for key's lock or for ctx to end. On success it returns the
// unlock function, which must be called exactly once.
func (m *Map) Lock(ctx context.Context, key string) (func(), error) {
	m.mu.Lock()
	e, ok := m.locks[key]
	if !ok {
		e = &entry{ch: make(chan struct{}, 1)}
		m.locks[key] = e
	}
	e.refs++
	m.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		return func() {
			<-e.ch
			m.release(key, e)
		}, nil
	case <-ctx.Done():
		m.release(key, e)
		return nil, ctx.Err()
	}
}

func (m *Map) release(key string, e *entry) {
	m.mu.Lock()
	e.refs--
	if e.refs == 0 {
		delete(m.locks, key)
	}
	m.mu.Unlock()
}
