package ids

import (
	"strings"
	"testing"
	"time"
)

func TestGeneratorIsMonotonicWithinOneMillisecond(t *testing.T) {
	t.Parallel()
	fixed := time.Date(2026, 4, 27, 10, 0, 0, 0, time.UTC)
	g := NewGenerator(func() time.Time { return fixed })
	prev := g.New(EventPrefix)
	for i := 0; i < 1000; i++ {
		next := g.New(EventPrefix)
		if next <= prev {
			t.Fatalf("id %d: got %s after %s, want strictly increasing", i, next, prev)
		}
		prev = next
	}
}

func TestValid(t *testing.T) {
	t.Parallel()
	g := NewGenerator(time.Now)
	good := g.New(CampaignPrefix)
	if good != strings.ToLower(good) {
		t.Fatalf("got %s, want lowercase", good)
	}
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"minted", good, true},
		{"wrong prefix", "evt_" + strings.TrimPrefix(good, CampaignPrefix), false},
		{"short", good[:len(good)-1], false},
		{"bad alphabet", CampaignPrefix + strings.Repeat("u", 26), false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Valid(CampaignPrefix, tt.in); got != tt.want {
				t.Fatalf("Valid(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
