// Package ids mints the platform's identifiers: a type prefix ("rcm_",
// "evt_") followed by a lowercase ULID, so ids sort by creation time.
package ids

import (
	"crypto/rand"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// Prefixes of the identifiers the platform mints.
const (
	CampaignPrefix = "rcm_"
	EventPrefix    = "evt_"
	AttemptPrefix  = "att_"
)

// Generator mints monotonic ULIDs: two ids minted in the same millisecond by
// one generator still sort in minting order, which keeps an account's events
// ordered by id in the order they were accepted.
type Generator struct {
	mu      sync.Mutex
	entropy io.Reader
	now     func() time.Time
}

// NewGenerator returns a generator reading time from now.
func NewGenerator(now func() time.Time) *Generator {
	return &Generator{entropy: ulid.Monotonic(rand.Reader, 0), now: now}
}

// New returns prefix + a new lowercase ULID.
func (g *Generator) New(prefix string) string {
	g.mu.Lock()
	id := ulid.MustNew(ulid.Timestamp(g.now()), g.entropy)
	g.mu.Unlock()
	return prefix + strings.ToLower(id.String())
}

// Valid reports whether s is prefix followed by a well-formed ULID.
func Valid(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || len(rest) != ulid.EncodedSize {
		return false
	}
	_, err := ulid.ParseStrict(strings.ToUpper(rest))
	return err == nil
}
