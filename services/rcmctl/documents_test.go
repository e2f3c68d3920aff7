package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestDocumentValueBorrower(t *testing.T) {
	for _, tc := range []struct {
		tz, state, want, warning string
	}{
		{"", "", `{"id":"doc_1","accountId":"user_1","loan":null,"version":1}`, ""},
		{"America/Chicago", "tx", `{"id":"doc_1","accountId":"user_1","loan":null,"version":1,"borrower":{"timeZone":"America/Chicago","state":"TX"}}`, ""},
		{"", "MA", `{"id":"doc_1","accountId":"user_1","loan":null,"version":1,"borrower":{"state":"MA"}}`, ""},
		{"America/Chicgo", "", `{"id":"doc_1","accountId":"user_1","loan":null,"version":1,"borrower":{"timeZone":"America/Chicgo"}}`, "not in the time-zone database"},
	} {
		var stderr bytes.Buffer
		b, err := newBorrower(tc.tz, tc.state, &stderr)
		if err != nil {
			t.Fatalf("%q %q: %v", tc.tz, tc.state, err)
		}
		raw, err := json.Marshal(documentValue{ID: "doc_1", AccountID: "user_1", Version: 1, Borrower: b})
		if err != nil {
			t.Fatal(err)
		}
		if string(raw) != tc.want {
			t.Errorf("%q %q: got %s, want %s", tc.tz, tc.state, raw, tc.want)
		}
		if got := stderr.String(); (tc.warning == "") != (got == "") || !strings.Contains(got, tc.warning) {
			t.Errorf("%q %q: warned %q, want %q", tc.tz, tc.state, got, tc.warning)
		}
	}
	for _, state := range []string{"Massachusetts", "M", "M1"} {
		if _, err := newBorrower("", state, &bytes.Buffer{}); err == nil {
			t.Errorf("--state %q: accepted, want an error", state)
		}
	}
}
