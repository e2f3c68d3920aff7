package auditlog

import (
	"bytes"
	"testing"

	"github.com/gowebpki/jcs"
)

// plainCases are documents canonicalPlain takes, declines, or must not
// get wrong; each is checked against the general encoder.
var plainCases = []string{
	`{}`, `[]`, `{"b":1,"a":2}`, ` { "a" : [ 1 , 2 , {"z":null,"y":true,"x":false} ] } `,
	`{"a":1,"a!":2,"a ":3,"A":4,"_":5,"~":6}`, `{"ab":1,"a":2,"":3}`,
	`{"eventId":"evt_1","eventType":"opt_out","accountId":"org_1","activeChannels":[],"actor":{"type":"user","id":"u"}}`,
	`[0,-1,123456789012345,-123456789012345,1234567890123456,9007199254740993]`,
	`[-0]`, `[01]`, `[1.0]`, `[1.5]`, `[1e2]`, `[1E400]`, `[-]`, `[+1]`,
	`["a\"b"]`, `["\u0041"]`, `["é"]`, `["\ud800"]`, "[\"\x7f\"]", "[\"\x01\"]", `["😀"]`,
	`{"a":1,"a":2}`, `{"a":{"b":1,"b":1}}`, `{"a":1,"\u0061":2}`,
	`[1,]`, `{"a":1,}`, `{"a" 1}`, `[true false]`, `truex`, `[nul]`, `{"a":1}{}`, `{"a":1} x`,
	"\t[1]\r\n", `"top"`, `7`, `null`,
}

// TestCanonicalPlainIsTheGeneralForm: whatever canonicalPlain takes, it
// encodes byte for byte as jcs.Transform does; and Canonical's verdict on
// every case is the general encoder's.
func TestCanonicalPlainIsTheGeneralForm(t *testing.T) {
	t.Parallel()
	deep := bytes.Repeat([]byte("["), plainDepth+2)
	deep = append(deep, bytes.Repeat([]byte("]"), plainDepth+2)...)
	for _, in := range append(plainCases, string(deep)) {
		checkPlain(t, []byte(in))
	}
	for _, in := range []string{`{"b":1,"a":2}`, `[0,-1,123456789012345]`, `{"a":1,"a!":2}`} {
		if _, ok := canonicalPlain([]byte(in)); !ok {
			t.Errorf("%s: declined, want it taken", in)
		}
	}
}

func checkPlain(t *testing.T, in []byte) {
	t.Helper()
	want, wantErr := jcs.Transform(in)
	if got, ok := canonicalPlain(in); ok && (wantErr != nil || !bytes.Equal(got, want)) {
		t.Errorf("%q: plain form %q, general %q (%v)", in, got, want, wantErr)
	}
	got, err := Canonical(in)
	if (err != nil) != (wantErr != nil) || err == nil && !bytes.Equal(got, want) {
		t.Errorf("%q: Canonical %q (%v), general %q (%v)", in, got, err, want, wantErr)
	}
}

func FuzzCanonicalPlain(f *testing.F) {
	for _, in := range plainCases {
		f.Add([]byte(in))
	}
	f.Fuzz(checkPlain)
}
