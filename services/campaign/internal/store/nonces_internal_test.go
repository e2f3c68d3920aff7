package store

import (
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/principal"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestNonceClaimPushesUntilEnoughExpired: a claim pushes its nonce alone
// while few of the record's nonces expired, and writes the list without
// the expired ones once pruneAt of them did.
func TestNonceClaimPushesUntilEnoughExpired(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	n := Nonce{ID: "nonce_new", Expires: now.Add(principal.TTL)}
	held := func(expired, live int) []nonceDoc {
		var out []nonceDoc
		for range expired {
			out = append(out, nonceDoc{ID: "old", Expires: now.Add(-2 * principal.TTL)})
		}
		for range live {
			out = append(out, nonceDoc{ID: "live", Expires: now.Add(principal.TTL / 2)})
		}
		return out
	}
	value := func(d bson.D, key string) any {
		for _, e := range d {
			if e.Key == key {
				return e.Value
			}
		}
		return nil
	}
	for _, tt := range []struct {
		name           string
		held           []nonceDoc
		wantSet        int // nonces in the list set
		wantPushedOnly bool
	}{
		{name: "none held", held: nil, wantSet: 1},
		{name: "a few expired", held: held(pruneAt-1, 2), wantPushedOnly: true},
		{name: "enough expired", held: held(pruneAt, 2), wantSet: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			set, push := n.claim(tt.held, nil, nil)
			if tt.wantPushedOnly {
				got, ok := value(push, "nonces").(nonceDoc)
				if !ok || got.ID != n.ID || value(set, "nonces") != nil {
					t.Fatalf("set %v, push %v: want the nonce pushed alone", set, push)
				}
				return
			}
			got, ok := value(set, "nonces").([]nonceDoc)
			if !ok || len(got) != tt.wantSet || got[len(got)-1].ID != n.ID || value(push, "nonces") != nil {
				t.Fatalf("set %v, push %v: want a list of %d set, ending with the nonce", set, push, tt.wantSet)
			}
		})
	}
}
