package auditlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestCanonical(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"sorted keys, no spaces", `{"b": 1, "a": [true, false, null], "c": {"z": "", "y": -2}}`, `{"a":[true,false,null],"b":1,"c":{"y":-2,"z":""}}`},
		{"escapes only what RFC 8785 escapes", `"q\" b\\ \n\t\r\b\f \u0001 \u001f / < > & é 😀 \u2028"`, "\"q\\\" b\\\\ \\n\\t\\r\\b\\f \\u0001 \\u001f / < > & é 😀 \u2028\""},
		{"utf-16 key order", `{"\ud83d\ude00": 1, "\uffff": 2, "a": 3}`, "{\"a\":3,\"😀\":1,\"\uffff\":2}"},
		{"integers plain", `[0, 10, -7, 123456789012]`, `[0,10,-7,123456789012]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestCanonicalNumbers: numbers take their ECMAScript form, as RFC 8785
// requires (vectors from its section 3.2.2.3 and appendix B).
func TestCanonicalNumbers(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"0", "0"},
		{"-0", "0"},
		{"0.1", "0.1"},
		{"1.0", "1"},
		{"4.50", "4.5"},
		{"2e-3", "0.002"},
		{"5e-7", "5e-7"},
		{"0.000001", "0.000001"},
		{"1e21", "1e+21"},
		{"1E30", "1e+30"},
		{"1e20", "100000000000000000000"},
		{"999999999999999900000", "999999999999999900000"},
		{"333333333.33333329", "333333333.3333333"},
		{"0.000000000000000000000000001", "1e-27"},
		{"-1.5e-9", "-1.5e-9"},
		{"9007199254740992", "9007199254740992"},
		{"9007199254740993", "9007199254740992"},
		{"295147905179352830000", "295147905179352830000"},
		{"1.7976931348623157e308", "1.7976931348623157e+308"},
		{"5e-324", "5e-324"},
		{"123456789012", "123456789012"},
	}
	for _, tt := range tests {
		got, err := Canonical([]byte(`[` + tt.in + `]`))
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if string(got) != "["+tt.want+"]" {
			t.Errorf("%s: got %s, want [%s]", tt.in, got, tt.want)
		}
	}
	// RFC 8785 section 3.2.4's example, whole.
	const in = `{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
		"string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}`
	const want = `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`
	if got, err := Canonical([]byte(in)); err != nil || string(got) != want {
		t.Errorf("RFC 8785 example: got %s %v\nwant %s", got, err, want)
	}
}

// TestCanonicalRejects: what RFC 8785 cannot encode is an error, never a
// silent change.
func TestCanonicalRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`[1e400]`, `[-1e400]`, `{"a":1,"a":2}`, `["\ud800"]`, `[01]`, `{"a":}`} {
		if got, err := Canonical([]byte(in)); err == nil {
			t.Errorf("%s: got %s, want an error", in, got)
		}
	}
}

func chain(t *testing.T, n int) []Entry {
	t.Helper()
	var out []Entry
	prev := GenesisHash
	for i := 1; i <= n; i++ {
		e := Entry{
			EventID: fmt.Sprintf("evt_%d", i), AccountID: "org_1", Seq: int64(i), EventType: "opt_out",
			DocumentID: "doc_1", CampaignID: "rcm_1", Actor: Actor{Type: "user", ID: "user_1", SessionID: "sess_1"},
			Data:       json.RawMessage(fmt.Sprintf(`{"eventType":"opt_out","channel":"sms","notes":"n° %d"}`, i)),
			OccurredAt: "2026-04-27T10:00:00.000Z", RecordedAt: "2026-04-27T10:00:00.100Z",
		}
		if err := Seal(&e, prev); err != nil {
			t.Fatal(err)
		}
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

func verify(entries []Entry) Result {
	v := NewVerifier("org_1")
	for _, e := range entries {
		if errors.Is(v.Add(e), ErrBroken) {
			break
		}
	}
	return v.Result()
}

func TestVerifyFindsTheFirstBrokenSeq(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		tamper     func([]Entry) []Entry
		wantBroken int64 // 0 = intact
	}{
		{"intact", func(es []Entry) []Entry { return es }, 0},
		{"edited data", func(es []Entry) []Entry {
			es[2].Data = json.RawMessage(`{"eventType":"opt_out","channel":"all"}`)
			return es
		}, 3},
		{"edited actor", func(es []Entry) []Entry { es[1].Actor.ID = "user_2"; return es }, 2},
		{"edited time", func(es []Entry) []Entry { es[4].RecordedAt = "2026-04-28T10:00:00.000Z"; return es }, 5},
		{"deleted", func(es []Entry) []Entry { return append(es[:3:3], es[4:]...) }, 4},
		{"deleted last", func(es []Entry) []Entry { return es[:5] }, 0},
		{"reordered", func(es []Entry) []Entry { es[1], es[2] = es[2], es[1]; return es }, 2},
		{"seqs swapped", func(es []Entry) []Entry { es[1].Seq, es[2].Seq = 3, 2; es[1], es[2] = es[2], es[1]; return es }, 2},
		{"rehashed edit", func(es []Entry) []Entry {
			es[2].Data = json.RawMessage(`{"eventType":"opt_out","channel":"all"}`)
			_ = Seal(&es[2], es[2].PrevHash)
			return es
		}, 4},
		{"duplicate", func(es []Entry) []Entry { return append(es[:3:3], es[2:]...) }, 3},
		{"other account", func(es []Entry) []Entry { es[0].AccountID = "org_2"; return es }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := verify(tt.tamper(chain(t, 6)))
			if tt.wantBroken == 0 {
				if !res.OK || res.FirstBrokenSeq != nil {
					t.Fatalf("got %+v, want ok", res)
				}
				return
			}
			if res.OK || res.FirstBrokenSeq == nil || *res.FirstBrokenSeq != tt.wantBroken {
				t.Fatalf("got %+v, want first broken seq %d", res, tt.wantBroken)
			}
		})
	}
}

// roundTrip writes d as the store does and reads it back.
func roundTrip(t *testing.T, d any) Entry {
	t.Helper()
	raw, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Doc
	if err := bson.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	got, err := back.Entry()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestStoredFormRoundTrips: an entry written to the store and read back
// has its data byte for byte and hashes the same, whatever its data holds:
// strings of any kind, fractional and large numbers, objects that look
// like MongoDB extended JSON.
func TestStoredFormRoundTrips(t *testing.T) {
	t.Parallel()
	datas := map[string]string{
		"strings":       `{"eventType":"opt_out","notes":"<b>\"quoted\" & 'single' \\ back\u0001 tab\t 日本 😀 \u2028","deactivated":false,"activeChannels":[],"loanStatus":null,"campaign":{"optOuts":[{"channel":"sms"}]}}`,
		"numbers":       `{"eventType":"opt_out","score":0.1,"big":1e21,"small":5e-7,"neg":-0,"x":1.0, "spaced" : [ 1 , 2 ]}`,
		"extended json": `{"eventType":"opt_out","n":{"$numberLong":"5"},"d":{"$date":"2026-04-27T10:00:00Z"},"o":{"$oid":"65f0c0ffee0000000000beef"},"k":{"$numberDecimal":"1.10"},"b":{"$binary":{"base64":"AA==","subType":"00"}}}`,
		"unicode keys":  `{"eventType":"opt_out","\ud83d\ude00":1,"\uffff":2,"é":"ü","$":"dollar","a.b":"dot"}`,
	}
	for name, data := range datas {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := Entry{
				EventID: "evt_1", AccountID: "org_1", Seq: 1, EventType: "opt_out", DocumentID: "doc_1", CampaignID: "rcm_1",
				Actor:      Actor{Type: "user", ID: "user_1"},
				Data:       json.RawMessage(data),
				OccurredAt: "2026-04-27T10:00:00.000Z", RecordedAt: "2026-04-27T10:00:00.001Z",
			}
			if err := Seal(&e, GenesisHash); err != nil {
				t.Fatal(err)
			}
			d, err := ToDoc(e, "org_1/000000000001")
			if err != nil {
				t.Fatal(err)
			}
			got := roundTrip(t, d)
			if string(got.Data) != data {
				t.Errorf("data after the round trip\n got %s\nwant %s", got.Data, data)
			}
			if h, err := ComputeHash(got); err != nil || h != e.Hash {
				t.Fatalf("hash after the round trip %s %v, want %s", h, err, e.Hash)
			}
		})
	}
}

// TestOldStoredFormStillVerifies: entries stored before data was kept as
// its text (data as an embedded document) read back as they always did.
func TestOldStoredFormStillVerifies(t *testing.T) {
	t.Parallel()
	e := chain(t, 1)[0]
	var data bson.D
	if err := bson.UnmarshalExtJSON(e.Data, false, &data); err != nil {
		t.Fatal(err)
	}
	old := bson.D{
		{Key: "_id", Value: "org_1/000000000001"}, {Key: "eventId", Value: e.EventID}, {Key: "accountId", Value: e.AccountID},
		{Key: "seq", Value: e.Seq}, {Key: "eventType", Value: e.EventType}, {Key: "documentId", Value: e.DocumentID},
		{Key: "campaignId", Value: e.CampaignID}, {Key: "actor", Value: e.Actor}, {Key: "data", Value: data},
		{Key: "occurredAt", Value: e.OccurredAt}, {Key: "recordedAt", Value: e.RecordedAt},
		{Key: "prevHash", Value: e.PrevHash}, {Key: "hash", Value: e.Hash},
	}
	got := roundTrip(t, old)
	if h, err := ComputeHash(got); err != nil || h != e.Hash {
		t.Fatalf("hash of the old form %s %v, want %s\ndata %s", h, err, e.Hash, got.Data)
	}
	// An edit of the old form is seen.
	data[2].Value = "n° 2"
	old[8].Value = data
	if h, _ := ComputeHash(roundTrip(t, old)); h == e.Hash {
		t.Fatal("an edited old entry hashes as the original")
	}
}

// TestHashIsStable pins the hash of one entry to the value the auditor's
// Python script (docs/verify_log.py) computes for it, so that no change of
// code can change what an exported log hashes to.
func TestHashIsStable(t *testing.T) {
	t.Parallel()
	e := Entry{
		EventID: "evt_01k0b2z9y8x7w6v5u4t3s2r1q0", AccountID: "org_acme", Seq: 3, EventType: "opt_out",
		DocumentID: "doc_123", CampaignID: "rcm_01k0b2z9y8x7w6v5u4t3s2r1q1",
		Actor:      Actor{Type: "user", ID: "user_2abc", SessionID: "sess_2abc"},
		Data:       json.RawMessage(`{"eventType":"opt_out","channel":"sms","notes":"n\u00b0 \"1\" 😀\n","deactivated":false,"activeChannels":["email"]}`),
		OccurredAt: "2026-04-27T10:00:00.123Z", RecordedAt: "2026-04-27T10:00:00.150Z",
	}
	if err := Seal(&e, strings.Repeat("a", 64)); err != nil {
		t.Fatal(err)
	}
	const want = "36a5cb14a4cb4733e14aa993e5902ee35b301021b545a458a2f0cbc526982354"
	if e.Hash != want {
		t.Fatalf("got hash %s, want %s", e.Hash, want)
	}
}

// TestAuditorScriptAgrees runs the auditor's script (docs/verify_log.py)
// on an export whose data holds what RFC 8785 is particular about:
// fractional and large numbers, -0, keys beyond the BMP, and objects that
// look like MongoDB extended JSON. The script must find the chain intact,
// and broken where one number is written differently with the same value
// in JSON but another in its hash.
func TestAuditorScriptAgrees(t *testing.T) {
	t.Parallel()
	datas := []string{
		`{"eventType":"opt_out","channel":"sms","notes":"n\u00b0 \"1\" 😀\n"}`,
		`{"eventType":"opt_out","score":0.1,"big":1e21,"small":5e-7,"neg":-0,"third":333333333.33333329,"huge":9007199254740993,"x":1.0}`,
		`{"eventType":"opt_out","n":{"$numberLong":"5"},"d":{"$date":"2026-04-27T10:00:00Z"},"o":{"$oid":"65f0c0ffee0000000000beef"},"\ud83d\ude00":1,"\uffff":2,"é":[1.5e-9,2e-3,4.50]}`,
	}
	var lines []string
	prev := GenesisHash
	for i, d := range datas {
		e := Entry{
			EventID: fmt.Sprintf("evt_%d", i+1), AccountID: "org_py", Seq: int64(i + 1), EventType: "opt_out",
			DocumentID: "doc_1", CampaignID: "rcm_1", Actor: Actor{Type: "user", ID: "user_1"},
			Data: json.RawMessage(d), OccurredAt: "2026-04-27T10:00:00.000Z", RecordedAt: "2026-04-27T10:00:00.001Z",
		}
		if err := Seal(&e, prev); err != nil {
			t.Fatal(err)
		}
		prev = e.Hash
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(line))
	}
	run := func(lines []string) (string, error) {
		path := filepath.Join(t.TempDir(), "export.jsonl")
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("python3", filepath.Join("..", "..", "docs", "verify_log.py"), path).CombinedOutput()
		return string(out), err
	}
	if out, err := run(lines); err != nil || !strings.Contains(out, "org_py: ok, 3 entries, head "+prev) {
		t.Fatalf("script: %v\n%s", err, out)
	}
	edited := slices.Clone(lines)
	edited[1] = strings.Replace(edited[1], `"score":0.1`, `"score":0.10000000000000002`, 1)
	if out, err := run(edited); err == nil || !strings.Contains(out, "BROKEN at seq 2") {
		t.Fatalf("script on an edited number: %v\n%s", err, out)
	}
}
