package auditlog

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// TestLeafsAndRootOfAFixedLog: the leaf data, leaf hashes and tree roots
// of a small fixed log, computed here without the package (the JSON
// written out by hand in RFC 8785 order, SHA-256 with the RFC 6962
// prefixes and tree shape), match LeafData and tlog's hashes.
func TestLeafsAndRootOfAFixedLog(t *testing.T) {
	t.Parallel()
	type fixed struct {
		event, actor, data string
		canonData          string // data as RFC 8785 writes it
		actorJSON          string
	}
	log := []fixed{
		{"evt_1", "user_1", `{"notes": "n° 1 \"é\" 😀", "eventType": "opt_out", "channel": "sms"}`,
			`{"channel":"sms","eventType":"opt_out","notes":"n° 1 \"é\" 😀"}`, `{"id":"user_1","sessionId":"sess_1","type":"user"}`},
		{"evt_2", "", `{"reason": "loan_current", "eventType": "campaign_ended", "rate": 1.50}`,
			`{"eventType":"campaign_ended","rate":1.5,"reason":"loan_current"}`, `{"id":"documents","type":"system"}`},
		{"evt_3", "user_1", `{"channel":"all","limit":1e21}`, `{"channel":"all","limit":1e+21}`, `{"id":"user_1","sessionId":"sess_1","type":"user"}`},
		{"evt_4", "user_1", `{"z":[3,2,1],"a":null}`, `{"a":null,"z":[3,2,1]}`, `{"id":"user_1","sessionId":"sess_1","type":"user"}`},
		{"evt_5", "user_1", `{"b":{"y":true,"x":false}}`, `{"b":{"x":false,"y":true}}`, `{"id":"user_1","sessionId":"sess_1","type":"user"}`},
	}
	prev := GenesisHash
	var wantLeaves []tlog.Hash
	var stored []tlog.Hash
	for i, f := range log {
		seq := i + 1
		actor := Actor{Type: "user", ID: f.actor, SessionID: "sess_1"}
		if f.actor == "" {
			actor = Actor{Type: "system", ID: "documents"}
		}
		e := Entry{
			EventID: f.event, AccountID: "org_1", Seq: int64(seq), EventType: "opt_out",
			DocumentID: "doc_1", CampaignID: "rcm_1", Actor: actor, Data: json.RawMessage(f.data),
			OccurredAt: "2026-04-27T10:00:00.000Z", RecordedAt: "2026-04-27T10:00:00.100Z",
		}
		if err := Seal(&e, prev); err != nil {
			t.Fatal(err)
		}

		// The chain hash and the leaf, written out by hand.
		common := fmt.Sprintf(`"accountId":"org_1","actor":%s,"campaignId":"rcm_1","data":%s,"documentId":"doc_1","eventId":"%s","eventType":"opt_out"`,
			f.actorJSON, f.canonData, f.event)
		chained := sha256.Sum256([]byte(prev + "{" + common + fmt.Sprintf(`,"occurredAt":"2026-04-27T10:00:00.000Z","recordedAt":"2026-04-27T10:00:00.100Z","seq":%d}`, seq)))
		hash := hex.EncodeToString(chained[:])
		if e.Hash != hash {
			t.Fatalf("entry %d: hash %s, want %s", seq, e.Hash, hash)
		}
		wantData := "{" + common + fmt.Sprintf(`,"hash":"%s","occurredAt":"2026-04-27T10:00:00.000Z","prevHash":"%s","recordedAt":"2026-04-27T10:00:00.100Z","seq":%d}`, hash, prev, seq)
		data, err := LeafData(e)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != wantData {
			t.Fatalf("entry %d: leaf data\n got %s\nwant %s", seq, data, wantData)
		}
		leaf := tlog.Hash(sha256.Sum256(append([]byte{0x00}, wantData...)))
		if got := tlog.RecordHash(data); got != leaf {
			t.Fatalf("entry %d: leaf hash %x, want %x", seq, got, leaf)
		}
		wantLeaves = append(wantLeaves, leaf)

		hs, err := tlog.StoredHashes(int64(i), data, tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(ix))
			for j, x := range ix {
				out[j] = stored[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		prev = hash
	}

	reader := tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ix))
		for j, x := range ix {
			out[j] = stored[x]
		}
		return out, nil
	})
	for n := 1; n <= len(wantLeaves); n++ {
		got, err := tlog.TreeHash(int64(n), reader)
		if err != nil {
			t.Fatal(err)
		}
		if want := rfc6962Root(wantLeaves[:n]); got != want {
			t.Fatalf("root of %d: got %x, want %x", n, got, want)
		}
	}
}

// rfc6962Root is the Merkle tree hash of RFC 6962 section 2.1: split at
// the largest power of two smaller than n, interior SHA-256(0x01 ‖ l ‖ r).
func rfc6962Root(leaves []tlog.Hash) tlog.Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := rfc6962Root(leaves[:k]), rfc6962Root(leaves[k:])
	return sha256.Sum256(append(append([]byte{0x01}, l[:]...), r[:]...))
}
