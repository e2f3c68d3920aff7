package auditlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"go.mongodb.org/mongo-driver/v2/bson"
	"strings"
	"testing"
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
	if _, err := Canonical([]byte(`{"x": 1.5}`)); err == nil {
		t.Fatal("a fractional number: got nil error, want one")
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

// TestStoredFormRoundTrips: an entry written to the store and read back
// hashes the same, whatever its strings hold.
func TestStoredFormRoundTrips(t *testing.T) {
	t.Parallel()
	e := Entry{
		EventID: "evt_1", AccountID: "org_1", Seq: 1, EventType: "opt_out", DocumentID: "doc_1", CampaignID: "rcm_1",
		Actor:      Actor{Type: "user", ID: "user_1"},
		Data:       json.RawMessage(`{"eventType":"opt_out","notes":"<b>\"quoted\" & 'single' \\ back\u0001 tab\t 日本 😀 \u2028","deactivated":false,"activeChannels":[],"loanStatus":null,"campaign":{"optOuts":[{"channel":"sms"}]}}`),
		OccurredAt: "2026-04-27T10:00:00.000Z", RecordedAt: "2026-04-27T10:00:00.001Z",
	}
	if err := Seal(&e, GenesisHash); err != nil {
		t.Fatal(err)
	}
	d, err := ToDoc(e)
	if err != nil {
		t.Fatal(err)
	}
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
	h, err := ComputeHash(got)
	if err != nil {
		t.Fatal(err)
	}
	if h != e.Hash {
		t.Fatalf("hash after the round trip %s, want %s\ndata %s", h, e.Hash, got.Data)
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
