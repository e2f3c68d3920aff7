package contact

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
)

// propertyZones mixes DST and non-DST US zones, the fallback, and zones
// with fractional offsets or a half-hour daylight-saving shift.
var propertyZones = []string{
	ny, phoenix, "America/Chicago", "Pacific/Honolulu", "", "Nowhere/Special",
	"Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham", "Europe/London",
}

// randomFacts draws facts whose standing rules pass, so that the timed
// rules and nextAllowedAt are exercised. Every instant is a whole
// millisecond, as the records are.
func randomFacts(r *rand.Rand) Facts {
	channels := []string{"call", "sms", "email"}
	year := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := Facts{
		At:         year.Add(time.Duration(r.Int64N(int64(365*24*time.Hour/time.Millisecond))) * time.Millisecond),
		Channel:    channels[r.IntN(3)],
		Campaign:   &Campaign{Active: true, Channels: channels},
		LoanBehind: true,
		TimeZone:   propertyZones[r.IntN(len(propertyZones))],
		State:      []string{"", "MA", "NY"}[r.IntN(3)],
	}
	// Attempts from 200 h before At to 48 h after it (a dry run in the
	// past sees attempts recorded since); bunched so limits are reached.
	span := int64(248 * time.Hour / time.Millisecond)
	for range r.IntN(24) {
		a := Attempt{
			Channel:     channels[r.IntN(3)],
			Direction:   Outbound,
			Allowed:     r.IntN(10) < 8,
			AttemptedAt: f.At.Add(-200*time.Hour + time.Duration(r.Int64N(span))*time.Millisecond),
		}
		if r.IntN(8) == 0 {
			a.Direction, a.Allowed = Inbound, true
		}
		if a.Allowed && r.IntN(4) == 0 {
			outs := contract.Outcomes(a.Channel)
			a.Outcome = outs[r.IntN(len(outs))]
			a.OutcomeAt = a.AttemptedAt.Add(time.Duration(r.Int64N(int64(3*time.Hour/time.Millisecond))) * time.Millisecond)
		}
		f.History = append(f.History, a)
	}
	// A third of the draws are a calling streak: 6 to 12 allowed calls in
	// the 168 h around At, so the call limit is reached and left often.
	if r.IntN(3) == 0 {
		f.Channel = "call"
		for range 6 + r.IntN(7) {
			f.History = append(f.History, Attempt{Channel: "call", Direction: Outbound, Allowed: true,
				AttemptedAt: f.At.Add(-144*time.Hour + time.Duration(r.Int64N(int64(168*time.Hour/time.Millisecond)))*time.Millisecond)})
		}
	}
	return f
}

// candidates are the instants from which a rule may start to pass: the
// evaluation instant, every instant something leaves the window, and every
// local 08:00 of the zones involved. The set of instants at which every
// rule passes is a union of intervals each starting at one of them.
func candidates(f Facts, until time.Time) []time.Time {
	out := []time.Time{f.At}
	for _, a := range f.History {
		out = append(out, a.AttemptedAt.Add(Window))
		if !a.OutcomeAt.IsZero() {
			out = append(out, a.OutcomeAt.Add(Window))
		}
	}
	for _, loc := range zonesOf(f.TimeZone) {
		l := f.At.In(loc)
		for d := -1; ; d++ {
			o := time.Date(l.Year(), l.Month(), l.Day()+d, OpensAt, 0, 0, 0, loc)
			if o.After(until) {
				break
			}
			out = append(out, o)
		}
	}
	return out
}

// checkNextAllowed checks the definition of nextAllowedAt on f: a blocked
// decision's NextAllowedAt T is allowed, and no instant in [At, T) is.
func checkNextAllowed(t *testing.T, f Facts) {
	t.Helper()
	d := Evaluate(f)
	if d.Allowed {
		if d.NextAllowedAt != nil || d.Reason != "" {
			t.Fatalf("allowed with %s", show(d))
		}
		return
	}
	if d.NextAllowedAt == nil {
		t.Fatalf("blocked for %s, a rule time can fix, without nextAllowedAt", d.Reason)
	}
	next := *d.NextAllowedAt
	if !next.After(f.At) {
		t.Fatalf("blocked at %s with nextAllowedAt %s, not after it", f.At, next)
	}
	at := func(i time.Time) Decision { g := f; g.At = i; return Evaluate(g) }
	if got := at(next); !got.Allowed {
		t.Fatalf("blocked for %s at %s, next allowed %s; there: %s", d.Reason, f.At.Format(time.RFC3339Nano), next.Format(time.RFC3339Nano), show(got))
	}
	before := []time.Time{next.Add(-time.Millisecond)}
	for _, c := range candidates(f, next) {
		if !c.Before(f.At) && c.Before(next) {
			before = append(before, c)
		}
	}
	for _, c := range before {
		got := at(c)
		if got.Allowed {
			t.Fatalf("blocked at %s with next allowed %s, but allowed at %s", f.At.Format(time.RFC3339Nano), next.Format(time.RFC3339Nano), c.Format(time.RFC3339Nano))
		}
		if got.NextAllowedAt == nil || !got.NextAllowedAt.Equal(next) {
			t.Fatalf("at %s, before next allowed %s: %s", c.Format(time.RFC3339Nano), next.Format(time.RFC3339Nano), show(got))
		}
	}
}

func TestNextAllowedAtProperty(t *testing.T) {
	t.Parallel()
	blocked := map[Reason]int{}
	for seed := range uint64(2000) {
		f := randomFacts(rand.New(rand.NewPCG(seed, 11)))
		if d := Evaluate(f); !d.Allowed {
			blocked[d.Reason]++
		}
		t.Run("", func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("seed %d: %+v", seed, f)
				}
			}()
			checkNextAllowed(t, f)
		})
	}
	t.Logf("blocked of 2000: %v", blocked)
	// The draw must reach every timed rule, or the property says little.
	for _, r := range Reasons() {
		if r.Fixable() && blocked[r] == 0 {
			t.Errorf("no random case blocked for %s; got %v", r, blocked)
		}
	}
}

// FuzzNextAllowedAt explores the same property from fuzzed seeds
// (go test -fuzz FuzzNextAllowedAt ./internal/contact).
func FuzzNextAllowedAt(f *testing.F) {
	for _, s := range []uint64{0, 1, 42, 1 << 40} {
		f.Add(s, uint64(11))
	}
	f.Fuzz(func(t *testing.T, s1, s2 uint64) {
		checkNextAllowed(t, randomFacts(rand.New(rand.NewPCG(s1, s2))))
	})
}

// TestEvaluateOrderIndependent: the history is a set; its order in the
// slice changes nothing.
func TestEvaluateOrderIndependent(t *testing.T) {
	t.Parallel()
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		f := randomFacts(r)
		want := Evaluate(f)
		g := f
		g.History = slices.Clone(f.History)
		r.Shuffle(len(g.History), func(i, j int) { g.History[i], g.History[j] = g.History[j], g.History[i] })
		if got := Evaluate(g); !sameDecision(got, want) {
			t.Fatalf("seed %d: got %s after shuffling, want %s", seed, show(got), show(want))
		}
	}
}
