// Package auditlog defines the compliance log's entry and its hash chain,
// so that the compliance service that writes and verifies the log and the
// command line that exports and re-verifies it offline agree byte for byte.
//
// Each account's entries form a chain: entry n carries seq = n (1, 2, 3…),
// prevHash = the hash of entry n-1 (64 zeros for the first), and
//
//	hash = hex(SHA-256(prevHash + canonical(entry)))
//
// where prevHash is the 64 lowercase hex characters as ASCII and
// canonical(entry) is the JSON object of the entry's fields other than
// prevHash and hash (eventId, accountId, seq, eventType, documentId,
// campaignId, actor, data, occurredAt, recordedAt) in the JSON
// Canonicalization Scheme of RFC 8785: keys sorted by UTF-16 code units,
// no insignificant whitespace, strings as UTF-8 with only '"', '\' and
// control characters escaped (\b \t \n \f \r, else \u00xx in lowercase
// hex), numbers as IEEE 754 doubles in ECMAScript's form (1.0 is 1, 1e21
// is 1e+21, 5e-7 stays 5e-7, -0 is 0). docs/compliance-log.md says how to
// re-verify an exported log with a short Python script.
package auditlog

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/gowebpki/jcs"
)

// GenesisHash is the prevHash of an account's first entry.
var GenesisHash = strings.Repeat("0", 64)

// Actor is who caused the logged action.
type Actor struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	SessionID string `json:"sessionId,omitempty"`
}

// Entry is one compliance log entry, in the form the log is exported and
// verified in.
type Entry struct {
	EventID    string          `json:"eventId"`
	AccountID  string          `json:"accountId"`
	Seq        int64           `json:"seq"`
	EventType  string          `json:"eventType"`
	DocumentID string          `json:"documentId"`
	CampaignID string          `json:"campaignId"`
	Actor      Actor           `json:"actor"`
	Data       json.RawMessage `json:"data"`
	OccurredAt string          `json:"occurredAt"`
	RecordedAt string          `json:"recordedAt"`
	PrevHash   string          `json:"prevHash"`
	Hash       string          `json:"hash"`
}

// hashed is an entry without its prevHash and hash: what its hash covers.
type hashed struct {
	EventID    string          `json:"eventId"`
	AccountID  string          `json:"accountId"`
	Seq        int64           `json:"seq"`
	EventType  string          `json:"eventType"`
	DocumentID string          `json:"documentId"`
	CampaignID string          `json:"campaignId"`
	Actor      Actor           `json:"actor"`
	Data       json.RawMessage `json:"data"`
	OccurredAt string          `json:"occurredAt"`
	RecordedAt string          `json:"recordedAt"`
}

// ComputeHash returns the hash entry e must carry, given its prevHash: the
// canonical entry without its prevHash and hash fields.
func ComputeHash(e Entry) (string, error) {
	raw, err := json.Marshal(hashed{
		EventID: e.EventID, AccountID: e.AccountID, Seq: e.Seq, EventType: e.EventType,
		DocumentID: e.DocumentID, CampaignID: e.CampaignID, Actor: e.Actor, Data: e.Data,
		OccurredAt: e.OccurredAt, RecordedAt: e.RecordedAt,
	})
	if err != nil {
		return "", fmt.Errorf("entry %d: %w", e.Seq, err)
	}
	canon, err := Canonical(raw)
	if err != nil {
		return "", fmt.Errorf("entry %d: %w", e.Seq, err)
	}
	sum := sha256.New()
	sum.Write([]byte(e.PrevHash))
	sum.Write(canon)
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// LeafData returns entry e as a leaf of the account's Merkle tree
// (spec/transparency.md): the RFC 8785 canonical JSON of exactly its
// fields eventId, accountId, seq, eventType, documentId, campaignId,
// actor, data, occurredAt, recordedAt, prevHash and hash, the fields the
// chain hashes plus its two links. The leaf hash is SHA-256(0x00 ‖ data),
// tlog.RecordHash.
func LeafData(e Entry) ([]byte, error) {
	// A struct of its own, so that a field added to Entry later (one the
	// export may carry) does not change the leaves.
	raw, err := json.Marshal(struct {
		hashed
		PrevHash string `json:"prevHash"`
		Hash     string `json:"hash"`
	}{hashed{
		EventID: e.EventID, AccountID: e.AccountID, Seq: e.Seq, EventType: e.EventType,
		DocumentID: e.DocumentID, CampaignID: e.CampaignID, Actor: e.Actor, Data: e.Data,
		OccurredAt: e.OccurredAt, RecordedAt: e.RecordedAt,
	}, e.PrevHash, e.Hash})
	if err != nil {
		return nil, fmt.Errorf("leaf %d: %w", e.Seq, err)
	}
	canon, err := Canonical(raw)
	if err != nil {
		return nil, fmt.Errorf("leaf %d: %w", e.Seq, err)
	}
	return canon, nil
}

// Seal sets e.PrevHash to prev and e.Hash to the entry's hash.
func Seal(e *Entry, prev string) error {
	e.PrevHash = prev
	h, err := ComputeHash(*e)
	if err != nil {
		return err
	}
	e.Hash = h
	return nil
}

// Check returns what entry e's fields make: the hash it must carry given
// its prevHash (ComputeHash) and its leaf data as it is (LeafData), from
// one canonical encoding (SealLeaf) when that hash is the one e carries;
// an entry that does not match its hash is encoded again as those two
// say, so that what is wrong with it is theirs to tell. It fails when e
// cannot be encoded.
func Check(e Entry) (hash string, leaf []byte, err error) {
	sealed := e
	if leaf, err = SealLeaf(&sealed, e.PrevHash, nil); err == nil && sealed.Hash == e.Hash {
		return sealed.Hash, leaf, nil
	}
	if hash, err = ComputeHash(e); err != nil {
		return "", nil, err
	}
	if leaf, err = LeafData(e); err != nil {
		return "", nil, err
	}
	return hash, leaf, nil
}

// Canonical re-encodes the JSON document raw per RFC 8785. It fails on
// what RFC 8785 cannot encode (I-JSON): a number beyond the range of a
// double, a duplicate key, a lone surrogate, invalid UTF-8.
//
// Plain JSON (canonicalPlain), what events mostly are, is encoded without
// the general encoder's parse into values and number formatting.
func Canonical(raw []byte) ([]byte, error) {
	if out, ok := canonicalPlain(raw); ok {
		return out, nil
	}
	out, err := jcs.Transform(raw)
	if err != nil {
		return nil, fmt.Errorf("canonical: %w", err)
	}
	return out, nil
}

// Result is the outcome of verifying one account's chain.
type Result struct {
	OK       bool   `json:"ok"`
	Entries  int64  `json:"entries"`
	HeadSeq  int64  `json:"headSeq"`
	HeadHash string `json:"headHash"`
	// TreeSize is the size of the account's Merkle tree as stored, and
	// RootHash its root in standard base64 (spec/transparency.md); they
	// are filled by whoever checks the tree.
	TreeSize int64  `json:"treeSize"`
	RootHash string `json:"rootHash"`
	// FirstBrokenSeq is the lowest seq at which the chain does not hold:
	// an entry edited, missing, out of place, or not linked to the one
	// before. Nil when OK.
	FirstBrokenSeq *int64 `json:"firstBrokenSeq"`
	// Reason says what broke, for people.
	Reason string `json:"reason,omitempty"`
}

// Verifier checks a chain fed to it entry by entry in seq order.
type Verifier struct {
	account string
	res     Result
	prev    string
}

// NewVerifier returns a Verifier of account's chain.
func NewVerifier(account string) *Verifier {
	return &Verifier{account: account, res: Result{OK: true}, prev: GenesisHash}
}

// ErrBroken is returned by Add once the chain is known broken; the result
// says where.
var ErrBroken = errors.New("chain broken")

// Add checks the next entry. After the first break it returns ErrBroken
// and ignores further entries.
func (v *Verifier) Add(e Entry) error {
	if !v.res.OK {
		return ErrBroken
	}
	h, err := ComputeHash(e)
	return v.AddHashed(e, h, err)
}

// AddHashed is Add of e given what its fields make: hash, the hash e must
// carry (ComputeHash), or hashErr when it has none, as Check gives them.
func (v *Verifier) AddHashed(e Entry, hash string, hashErr error) error {
	if !v.res.OK {
		return ErrBroken
	}
	want := v.res.HeadSeq + 1
	switch {
	case e.AccountID != v.account:
		return v.broken(want, fmt.Sprintf("entry of account %q in the chain of %q", e.AccountID, v.account))
	case e.Seq < want:
		return v.broken(e.Seq, fmt.Sprintf("seq %d appears again or out of order after %d", e.Seq, v.res.HeadSeq))
	case e.Seq > want:
		return v.broken(want, fmt.Sprintf("seq %d is missing (next entry is %d)", want, e.Seq))
	case e.PrevHash != v.prev:
		return v.broken(e.Seq, fmt.Sprintf("prevHash of %d does not link to the hash of %d", e.Seq, v.res.HeadSeq))
	}
	if hashErr != nil {
		return v.broken(e.Seq, hashErr.Error())
	}
	if hash != e.Hash {
		return v.broken(e.Seq, fmt.Sprintf("entry %d does not match its hash", e.Seq))
	}
	v.prev = e.Hash
	v.res.Entries++
	v.res.HeadSeq = e.Seq
	v.res.HeadHash = e.Hash
	return nil
}

func (v *Verifier) broken(seq int64, reason string) error {
	v.res.OK = false
	v.res.FirstBrokenSeq = &seq
	v.res.Reason = reason
	return ErrBroken
}

// Finish checks that the chain reached head, the seq the log is known to
// have reached (from a record kept apart from the entries): entries missing
// from the end break it too.
func (v *Verifier) Finish(head int64) Result {
	if v.res.OK && v.res.HeadSeq < head {
		_ = v.broken(v.res.HeadSeq+1, fmt.Sprintf("entries %d to %d are missing", v.res.HeadSeq+1, head))
	}
	return v.res
}

// Result returns the verdict so far.
func (v *Verifier) Result() Result { return v.res }
