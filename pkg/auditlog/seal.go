package auditlog

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// SealLeaf sets e.PrevHash to prev and e.Hash to the entry's hash, as
// Seal does, and returns its leaf data, as LeafData does, from one
// canonical encoding of e.Data: canonData, when not nil, is
// Canonical(e.Data) computed beforehand (it does not depend on the seq or
// the chain, so a batch may compute it in parallel). The two objects
// around it are written here in RFC 8785 form: keys in their fixed
// sorted order, strings escaped as RFC 8785 says (after json.Marshal's
// replacement of invalid UTF-8 by U+FFFD, as Seal and LeafData have it),
// seq in decimal (it stays below 2^53).
func SealLeaf(e *Entry, prev string, canonData []byte) ([]byte, error) {
	if canonData == nil {
		var err error
		if canonData, err = Canonical(e.Data); err != nil {
			return nil, fmt.Errorf("entry %d: %w", e.Seq, err)
		}
	}
	e.PrevHash = prev
	// Keys in UTF-16 order: accountId actor campaignId data documentId
	// eventId eventType [hash] occurredAt [prevHash] recordedAt seq.
	head := make([]byte, 0, 256+len(canonData))
	head = append(head, `{"accountId":`...)
	head = appendString(head, e.AccountID)
	head = append(head, `,"actor":{"id":`...)
	head = appendString(head, e.Actor.ID)
	if e.Actor.SessionID != "" {
		head = append(head, `,"sessionId":`...)
		head = appendString(head, e.Actor.SessionID)
	}
	head = append(head, `,"type":`...)
	head = appendString(head, e.Actor.Type)
	head = append(head, `},"campaignId":`...)
	head = appendString(head, e.CampaignID)
	head = append(head, `,"data":`...)
	head = append(head, canonData...)
	head = append(head, `,"documentId":`...)
	head = appendString(head, e.DocumentID)
	head = append(head, `,"eventId":`...)
	head = appendString(head, e.EventID)
	head = append(head, `,"eventType":`...)
	head = appendString(head, e.EventType)

	var tail []byte
	tail = append(tail, `,"recordedAt":`...)
	tail = appendString(tail, e.RecordedAt)
	tail = append(tail, `,"seq":`...)
	tail = strconv.AppendInt(tail, e.Seq, 10)
	tail = append(tail, '}')

	sum := sha256.New()
	sum.Write([]byte(prev))
	sum.Write(head)
	sum.Write([]byte(`,"occurredAt":`))
	sum.Write(appendString(nil, e.OccurredAt))
	sum.Write(tail)
	e.Hash = hex.EncodeToString(sum.Sum(nil))

	leaf := head
	leaf = append(leaf, `,"hash":`...)
	leaf = appendString(leaf, e.Hash)
	leaf = append(leaf, `,"occurredAt":`...)
	leaf = appendString(leaf, e.OccurredAt)
	leaf = append(leaf, `,"prevHash":`...)
	leaf = appendString(leaf, e.PrevHash)
	leaf = append(leaf, tail...)
	return leaf, nil
}

// appendString appends s as an RFC 8785 string: '"' and '\' escaped,
// \b \t \n \f \r, other control characters as \u00xx in lowercase hex,
// everything else as UTF-8, invalid bytes as U+FFFD.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
