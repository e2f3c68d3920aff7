package auditlog

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// TestSealLeafIsSealAndLeafData: SealLeaf gives the hash Seal gives and
// the leaf LeafData gives, for strings of every kind (escapes, control
// characters, U+2028, HTML characters, characters beyond the BMP,
// invalid UTF-8), with and without a session, with its data canonical
// given or not.
func TestSealLeafIsSealAndLeafData(t *testing.T) {
	t.Parallel()
	pieces := []string{"", "a", "é", "😀", "\"", "\\", "\b\t\n\f\r", "\x00\x01\x1f", "\x7f", "\u2028\u2029", "<>&",
		"\xff", "\xe2\x82", "\ufffd", "/", "\u00a0", "evt_0123", "2026-04-27T10:00:00.000Z"}
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		var s string
		for range rng.IntN(5) {
			s += pieces[rng.IntN(len(pieces))]
		}
		return s
	}
	datas := []string{`{"b":1,"a":"x"}`, `{"notes": "n° 1 \"é\" 😀 <b>&", "z":[3,2,1.50,1e21]}`, `{}`, `{"u":"\u2028\ud83d\ude00"}`}
	for i := range 2000 {
		e := Entry{
			EventID: str(), AccountID: str(), Seq: rng.Int64N(1 << 53), EventType: str(), DocumentID: str(), CampaignID: str(),
			Actor: Actor{Type: str(), ID: str(), SessionID: str()}, Data: json.RawMessage(datas[i%len(datas)]),
			OccurredAt: str(), RecordedAt: str(),
		}
		prev := str()
		want := e
		if err := Seal(&want, prev); err != nil {
			t.Fatal(err)
		}
		wantLeaf, err := LeafData(want)
		if err != nil {
			t.Fatal(err)
		}
		var canon []byte
		if i%2 == 0 {
			if canon, err = Canonical(e.Data); err != nil {
				t.Fatal(err)
			}
		}
		got := e
		leaf, err := SealLeaf(&got, prev, canon)
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash != want.Hash || got.PrevHash != want.PrevHash || !bytes.Equal(leaf, wantLeaf) {
			t.Fatalf("entry %+v:\nhash %s, want %s\nleaf %s\nwant %s", e, got.Hash, want.Hash, leaf, wantLeaf)
		}
	}
	if _, err := SealLeaf(&Entry{Data: json.RawMessage(`{"a":1,"a":2}`)}, GenesisHash, nil); err == nil {
		t.Fatal("SealLeaf took data RFC 8785 cannot encode")
	}
}

// TestCheckIsComputeHashAndLeafData: Check gives the hash ComputeHash
// gives and the leaf LeafData gives, for an entry sealed as written and
// for the same entry edited in every field (where its hash no longer
// holds), and fails where they fail.
func TestCheckIsComputeHashAndLeafData(t *testing.T) {
	t.Parallel()
	e := Entry{
		EventID: "evt_1", AccountID: "org_1", Seq: 7, EventType: "opt_out", DocumentID: "doc_1", CampaignID: "cmp_1",
		Actor: Actor{Type: "user", ID: "user_1", SessionID: "sess_1"}, Data: json.RawMessage(`{"b":1,"a":"<é>"}`),
		OccurredAt: "2026-04-27T10:00:00.000Z", RecordedAt: "2026-04-27T10:00:01.000Z",
	}
	if err := Seal(&e, GenesisHash); err != nil {
		t.Fatal(err)
	}
	edits := []func(*Entry){
		func(*Entry) {},
		func(x *Entry) { x.EventID += "x" }, func(x *Entry) { x.AccountID += "x" }, func(x *Entry) { x.Seq++ },
		func(x *Entry) { x.EventType += "x" }, func(x *Entry) { x.DocumentID += "x" }, func(x *Entry) { x.CampaignID += "x" },
		func(x *Entry) { x.Actor.ID += "x" }, func(x *Entry) { x.Actor.SessionID = "" }, func(x *Entry) { x.Data = json.RawMessage(`{"a":"<é>","b":1.0}`) },
		func(x *Entry) { x.Data = json.RawMessage(`{"a":2}`) }, func(x *Entry) { x.OccurredAt += "x" }, func(x *Entry) { x.RecordedAt += "x" },
		func(x *Entry) { x.PrevHash = e.Hash }, func(x *Entry) { x.Hash = GenesisHash },
	}
	for i, edit := range edits {
		x := e
		edit(&x)
		wantHash, err := ComputeHash(x)
		if err != nil {
			t.Fatal(err)
		}
		wantLeaf, err := LeafData(x)
		if err != nil {
			t.Fatal(err)
		}
		hash, leaf, err := Check(x)
		if err != nil || hash != wantHash || !bytes.Equal(leaf, wantLeaf) {
			t.Fatalf("edit %d: Check gave %s %s %v, want %s %s", i, hash, leaf, err, wantHash, wantLeaf)
		}
	}
	bad := e
	bad.Data = json.RawMessage(`{"a":1,"a":2}`)
	if _, _, err := Check(bad); err == nil {
		t.Fatal("Check took data RFC 8785 cannot encode")
	}
}
