package contact

import (
	"sync"
	"sync/atomic"
	"time"
	_ "time/tzdata" // the zone database travels with the binary: a host without one answers the same
)

// Contact hours: the borrower's local wall clock must be in
// [OpensAt, ClosesAt) hours (Regulation F, 12 CFR 1006.6(b)(1)(i)).
const (
	OpensAt  = 8
	ClosesAt = 21
)

// FallbackZones are the zones of the 50 states, DC and Puerto Rico. When the
// borrower's zone is absent or unknown, a contact must be within contact
// hours in every one of them at once, which is [18:00Z, 01:00Z) all year.
var FallbackZones = []string{
	"America/New_York",
	"America/Chicago",
	"America/Denver",
	"America/Phoenix",
	"America/Los_Angeles",
	"America/Anchorage",
	"Pacific/Honolulu",
	"America/Puerto_Rico",
}

// maxUnknown bounds how many unknown zone names are remembered.
const maxUnknown = 1024

var (
	// zones caches lookups, so a clearance reads the zone database once per
	// name: the location of every name found (bounded by the database) and
	// nil for up to maxUnknown names not found, so that names documents
	// make up cannot grow it without bound.
	zones    sync.Map // name -> *time.Location, nil when unknown
	unknown  atomic.Int64
	fallback = sync.OnceValue(func() []*time.Location {
		locs := make([]*time.Location, len(FallbackZones))
		for i, name := range FallbackZones {
			loc, ok := Location(name)
			if !ok {
				panic("contact: fallback zone " + name + " is not in the zone database")
			}
			locs[i] = loc
		}
		return locs
	})
)

// Location returns the zone of the IANA name, or false when name is empty
// or not in the zone database. "Local" is not a zone: it would make the
// answer depend on the host.
func Location(name string) (*time.Location, bool) {
	if name == "" || name == "Local" {
		return nil, false
	}
	if loc, ok := zones.Load(name); ok {
		loc := loc.(*time.Location)
		return loc, loc != nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		if unknown.Add(1) <= maxUnknown {
			zones.Store(name, (*time.Location)(nil))
		}
		return nil, false
	}
	zones.Store(name, loc)
	return loc, true
}

// zonesOf returns the zones whose contact hours a contact must fall in:
// the borrower's own, or every fallback zone.
func zonesOf(name string) []*time.Location {
	if loc, ok := Location(name); ok {
		return []*time.Location{loc}
	}
	return fallback()
}

// InContactHours reports whether t is within contact hours for a borrower
// in the zone named timeZone (every fallback zone when it is empty or
// unknown).
func InContactHours(t time.Time, timeZone string) bool {
	_, failed := checkHours(Facts{}, zonesOf(timeZone), t)
	return !failed
}

func inHours(t time.Time, loc *time.Location) bool {
	h := t.In(loc).Hour()
	return h >= OpensAt && h < ClosesAt
}

// nextOpening is the first OpensAt:00 local after t: on t's local date when
// t is before it, else on the next local date. Daylight-saving days are
// handled by time.Date, which reads the wall clock on that date.
func nextOpening(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	y, m, d := l.Date()
	if l.Hour() >= OpensAt {
		d++
	}
	next := time.Date(y, m, d, OpensAt, 0, 0, 0, loc)
	if !next.After(t) {
		// Only a zone whose clock jumps across the opening could get here;
		// step past it rather than loop.
		next = t.Add(time.Minute)
	}
	return next
}
