package documents_test

import (
	"errors"
	"testing"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/documents"
)

// TestParseBorrower: the optional borrower of a documents.v1 value is read
// into the document; a value without it (older producers) or with null
// still parses, with no borrower.
func TestParseBorrower(t *testing.T) {
	t.Parallel()
	const head = `{"id":"doc_b","accountId":"org_b","loan":{"status":"BEHIND"},"version":3`
	for _, tc := range []struct {
		name, value string
		want        campaign.Borrower
	}{
		{"both", head + `,"borrower":{"timeZone":"America/Chicago","state":"MA"}}`, campaign.Borrower{TimeZone: "America/Chicago", State: "MA"}},
		{"time zone only", head + `,"borrower":{"timeZone":"America/New_York"}}`, campaign.Borrower{TimeZone: "America/New_York"}},
		{"state only, as written by hand", head + `,"borrower":{"state":" ma "}}`, campaign.Borrower{State: "MA"}},
		{"empty", head + `,"borrower":{}}`, campaign.Borrower{}},
		{"null", head + `,"borrower":null}`, campaign.Borrower{}},
		{"absent (an older value)", head + `}`, campaign.Borrower{}},
		// A name the time-zone database lacks is kept: the rules fall
		// back to every US zone for it.
		{"unknown time zone", head + `,"borrower":{"timeZone":"Mars/Olympus"}}`, campaign.Borrower{TimeZone: "Mars/Olympus"}},
	} {
		u, err := documents.Parse(record("doc_b", tc.value))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if u.Doc == nil || u.Doc.Borrower != tc.want || u.Doc.Version != 3 || u.Doc.Loan == nil || u.Doc.Loan.Status != "BEHIND" {
			t.Fatalf("%s: got %+v, want borrower %+v", tc.name, u.Doc, tc.want)
		}
	}
	for _, bad := range []string{
		head + `,"borrower":"America/Chicago"}`,
		head + `,"borrower":{"timeZone":42}}`,
		head + `,"borrower":{"state":["MA"]}}`,
	} {
		if _, err := documents.Parse(record("doc_b", bad)); !errors.Is(err, events.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", bad, err)
		}
	}
}
