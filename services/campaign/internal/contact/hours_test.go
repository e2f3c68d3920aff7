package contact

import (
	"testing"
	"time"
)

func TestContactHours(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		zone string
		at   string
		next string // empty: allowed at at
	}{
		{name: "New York 08:00 exactly is in", zone: ny, at: "2026-06-10T08:00:00-04:00"},
		{name: "New York 1 ms before 08:00 is out", zone: ny, at: "2026-06-10T07:59:59.999-04:00", next: "2026-06-10T12:00:00Z"},
		{name: "New York 1 ms before 21:00 is in", zone: ny, at: "2026-06-10T20:59:59.999-04:00"},
		{name: "New York 21:00 exactly is out until 08:00 the next day", zone: ny, at: "2026-06-10T21:00:00-04:00", next: "2026-06-11T12:00:00Z"},
		{name: "New York just before midnight", zone: ny, at: "2026-06-10T23:59:59.999-04:00", next: "2026-06-11T12:00:00Z"},
		{name: "New York midnight opens the same date", zone: ny, at: "2026-06-11T00:00:00-04:00", next: "2026-06-11T12:00:00Z"},

		// Daylight saving in New York: 2026-03-08 02:00 EST becomes 03:00 EDT;
		// 2026-11-01 02:00 EDT becomes 01:00 EST.
		{name: "spring forward: the evening before opens at 08:00 EDT", zone: ny, at: "2026-03-07T21:30:00-05:00", next: "2026-03-08T12:00:00Z"},
		{name: "spring forward: in the skipped night", zone: ny, at: "2026-03-08T01:59:59.999-05:00", next: "2026-03-08T12:00:00Z"},
		{name: "spring forward: 1 ms before 08:00 EDT", zone: ny, at: "2026-03-08T11:59:59.999Z", next: "2026-03-08T12:00:00Z"},
		{name: "spring forward: 08:00 EDT is in", zone: ny, at: "2026-03-08T12:00:00Z"},
		{name: "spring forward: 21:00 EDT is out", zone: ny, at: "2026-03-09T01:00:00Z", next: "2026-03-09T12:00:00Z"},
		{name: "fall back: the spec's example", zone: ny, at: "2026-10-31T22:00:00-04:00", next: "2026-11-01T13:00:00Z"},
		{name: "fall back: in the repeated hour, first pass", zone: ny, at: "2026-11-01T01:30:00-04:00", next: "2026-11-01T13:00:00Z"},
		{name: "fall back: in the repeated hour, second pass", zone: ny, at: "2026-11-01T01:30:00-05:00", next: "2026-11-01T13:00:00Z"},
		{name: "fall back: 07:59 EST is out", zone: ny, at: "2026-11-01T12:59:00Z", next: "2026-11-01T13:00:00Z"},
		{name: "fall back: 20:59 EST is in", zone: ny, at: "2026-11-02T01:59:00Z"},
		{name: "fall back: 21:00 EST is out", zone: ny, at: "2026-11-02T02:00:00Z", next: "2026-11-02T13:00:00Z"},

		// Phoenix keeps MST all year: the same UTC hours in March and July.
		{name: "Phoenix on New York's spring-forward night", zone: phoenix, at: "2026-03-08T06:30:00Z", next: "2026-03-08T15:00:00Z"},
		{name: "Phoenix 08:00 in March", zone: phoenix, at: "2026-03-08T15:00:00Z"},
		{name: "Phoenix 1 ms before 08:00 in July", zone: phoenix, at: "2026-07-01T14:59:59.999Z", next: "2026-07-01T15:00:00Z"},
		{name: "Phoenix 08:00 in July", zone: phoenix, at: "2026-07-01T15:00:00Z"},
		{name: "Phoenix 21:00 in January", zone: phoenix, at: "2026-01-15T04:00:00Z", next: "2026-01-15T15:00:00Z"},
		{name: "Phoenix 20:59 in July", zone: phoenix, at: "2026-07-02T03:59:00Z"},

		// Unknown or absent zone: [18:00Z, 01:00Z) all year.
		{name: "unknown zone: 1 ms before 18:00Z in winter", zone: "Mars/Olympus_Mons", at: "2026-01-15T17:59:59.999Z", next: "2026-01-15T18:00:00Z"},
		{name: "unknown zone: 18:00Z in winter", zone: "Mars/Olympus_Mons", at: "2026-01-15T18:00:00Z"},
		{name: "unknown zone: 1 ms before 01:00Z in winter", zone: "Mars/Olympus_Mons", at: "2026-01-16T00:59:59.999Z"},
		{name: "unknown zone: 01:00Z in winter", zone: "Mars/Olympus_Mons", at: "2026-01-16T01:00:00Z", next: "2026-01-16T18:00:00Z"},
		{name: "unknown zone: 1 ms before 18:00Z in summer", zone: "Mars/Olympus_Mons", at: "2026-07-15T17:59:59.999Z", next: "2026-07-15T18:00:00Z"},
		{name: "unknown zone: 18:00Z in summer", zone: "Mars/Olympus_Mons", at: "2026-07-15T18:00:00Z"},
		{name: "unknown zone: 1 ms before 01:00Z in summer", zone: "Mars/Olympus_Mons", at: "2026-07-16T00:59:59.999Z"},
		{name: "unknown zone: 01:00Z in summer", zone: "Mars/Olympus_Mons", at: "2026-07-16T01:00:00Z", next: "2026-07-16T18:00:00Z"},
		{name: "unknown zone: across New York's fall back", zone: "Mars/Olympus_Mons", at: "2026-11-01T02:00:00Z", next: "2026-11-01T18:00:00Z"},
		{name: "absent zone falls back too", zone: "", at: "2026-07-15T17:00:00Z", next: "2026-07-15T18:00:00Z"},
		{name: "Local is not a zone", zone: "Local", at: "2026-07-15T17:00:00Z", next: "2026-07-15T18:00:00Z"},

		// Zones far from the US, whole and fractional offsets.
		{name: "Kolkata 08:00 IST", zone: "Asia/Kolkata", at: "2026-06-10T02:30:00Z"},
		{name: "Kolkata 21:00 IST", zone: "Asia/Kolkata", at: "2026-06-10T15:30:00Z", next: "2026-06-11T02:30:00Z"},
		{name: "UTC is a zone", zone: "UTC", at: "2026-06-10T07:00:00Z", next: "2026-06-10T08:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := baseFacts()
			f.TimeZone = tt.zone
			f.At = ts(t, tt.at)
			got := Evaluate(f)
			want := Decision{Allowed: true}
			if tt.next != "" {
				n := ts(t, tt.next)
				want = Decision{Reason: ReasonOutsideContactHours, NextAllowedAt: &n}
			}
			if !sameDecision(got, want) {
				t.Fatalf("got %s, want %s", show(got), show(want))
			}
			if in := InContactHours(f.At, tt.zone); in != (tt.next == "") {
				t.Fatalf("InContactHours = %v, want %v", in, tt.next == "")
			}
		})
	}
}

// TestFallbackIsEighteenToOneUTC checks the contract's summary of the
// fallback zones against the zones themselves, every quarter hour of two
// years (so both daylight-saving seasons of each).
func TestFallbackIsEighteenToOneUTC(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for at := start; at.Before(start.AddDate(2, 0, 0)); at = at.Add(15 * time.Minute) {
		h := at.Hour()
		want := h >= 18 || h < 1
		if got := InContactHours(at, ""); got != want {
			t.Fatalf("at %s: got in hours %v, want %v", at.Format(time.RFC3339), got, want)
		}
	}
}

func TestFallbackZonesAreInTheDatabase(t *testing.T) {
	t.Parallel()
	for _, name := range FallbackZones {
		if _, ok := Location(name); !ok {
			t.Errorf("fallback zone %s is not in the zone database", name)
		}
	}
}
