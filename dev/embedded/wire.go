package embedded

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The parts of the MongoDB wire protocol the front reads
// (https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/).
const (
	opMsg        = 2013
	headerLen    = 16
	maxMessage   = 64 << 20 // above MongoDB's 48 MB maxMessageSizeBytes
	flagChecksum = 1 << 0
	flagMore     = 1 << 1  // moreToCome: no reply follows
	flagExhaust  = 1 << 16 // exhaustAllowed: several replies may follow
)

// readMessage reads one whole message (header included) into buf, grown as
// needed.
func readMessage(r *bufio.Reader, buf []byte) ([]byte, error) {
	head, err := r.Peek(4)
	if err != nil {
		return buf, err
	}
	n := int(int32(binary.LittleEndian.Uint32(head)))
	if n < headerLen || n > maxMessage {
		return buf, fmt.Errorf("message length %d", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err = io.ReadFull(r, buf)
	return buf, err
}

func requestID(msg []byte) int32  { return int32(binary.LittleEndian.Uint32(msg[4:])) }
func responseTo(msg []byte) int32 { return int32(binary.LittleEndian.Uint32(msg[8:])) }
func opCode(msg []byte) int32     { return int32(binary.LittleEndian.Uint32(msg[12:])) }

// opMsgFlags is the flag word of an OP_MSG (false if msg is none).
func opMsgFlags(msg []byte) (uint32, bool) {
	if len(msg) < headerLen+4 || opCode(msg) != opMsg {
		return 0, false
	}
	return binary.LittleEndian.Uint32(msg[headerLen:]), true
}

// commandName is the first key of an OP_MSG's body when the body is its
// first section, as every driver writes it; "" otherwise. It reads only
// the few bytes it needs.
func commandName(msg []byte) string {
	const body = headerLen + 4 + 1 // flags, section kind
	if len(msg) < body+4+2 || msg[headerLen+4] != 0 {
		return ""
	}
	key := msg[body+4+1:] // after the document's length and the type byte
	for i, c := range key {
		if c == 0 {
			return string(key[:i])
		}
		if i == 32 {
			break
		}
	}
	return ""
}

// opMessage is a parsed OP_MSG: its body and its document sequences.
type opMessage struct {
	requestID int32
	body      bson.Raw
	seqs      []docSequence
}

type docSequence struct {
	id   string
	docs []bson.Raw
}

// parseOpMsg parses an OP_MSG without checksum.
func parseOpMsg(msg []byte) (*opMessage, error) {
	flags, ok := opMsgFlags(msg)
	if !ok || flags&flagChecksum != 0 {
		return nil, errors.New("not an OP_MSG without checksum")
	}
	m := &opMessage{requestID: requestID(msg)}
	rest := msg[headerLen+4:]
	for len(rest) > 0 {
		kind := rest[0]
		rest = rest[1:]
		if len(rest) < 4 {
			return nil, errors.New("short section")
		}
		size := int(int32(binary.LittleEndian.Uint32(rest)))
		if size < 5 || size > len(rest) {
			return nil, errors.New("bad section size")
		}
		sec := rest[:size]
		rest = rest[size:]
		switch kind {
		case 0:
			if m.body != nil {
				return nil, errors.New("two bodies")
			}
			m.body = bson.Raw(sec)
			if err := m.body.Validate(); err != nil {
				return nil, err
			}
		case 1:
			sec = sec[4:]
			i := 0
			for i < len(sec) && sec[i] != 0 {
				i++
			}
			if i == len(sec) {
				return nil, errors.New("bad sequence identifier")
			}
			s := docSequence{id: string(sec[:i])}
			docs := sec[i+1:]
			for len(docs) > 0 {
				if len(docs) < 5 {
					return nil, errors.New("short document")
				}
				n := int(int32(binary.LittleEndian.Uint32(docs)))
				if n < 5 || n > len(docs) {
					return nil, errors.New("bad document size")
				}
				d := bson.Raw(docs[:n])
				if err := d.Validate(); err != nil {
					return nil, err
				}
				s.docs = append(s.docs, d)
				docs = docs[n:]
			}
			m.seqs = append(m.seqs, s)
		default:
			return nil, fmt.Errorf("section kind %d", kind)
		}
	}
	if m.body == nil {
		return nil, errors.New("no body")
	}
	return m, nil
}

// encode writes the message as an OP_MSG without flags: the body, then the
// sequences.
func (m *opMessage) encode(responseTo int32) []byte {
	out := make([]byte, headerLen+4, headerLen+4+1+len(m.body)+64)
	binary.LittleEndian.PutUint32(out[4:], uint32(m.requestID))
	binary.LittleEndian.PutUint32(out[8:], uint32(responseTo))
	binary.LittleEndian.PutUint32(out[12:], opMsg)
	out = append(out, 0)
	out = append(out, m.body...)
	for _, s := range m.seqs {
		out = append(out, 1)
		start := len(out)
		out = append(out, 0, 0, 0, 0)
		out = append(out, s.id...)
		out = append(out, 0)
		for _, d := range s.docs {
			out = append(out, d...)
		}
		binary.LittleEndian.PutUint32(out[start:], uint32(len(out)-start))
	}
	binary.LittleEndian.PutUint32(out, uint32(len(out)))
	return out
}

// message is an OP_MSG holding doc, in reply to the request "to" (0 for
// none).
func message(requestID, to int32, doc bson.Raw) []byte {
	return (&opMessage{requestID: requestID, body: doc}).encode(to)
}

// document builds a BSON document of raw elements.
func document(elems ...[]byte) bson.Raw {
	n := 5
	for _, e := range elems {
		n += len(e)
	}
	out := make([]byte, 4, n)
	binary.LittleEndian.PutUint32(out, uint32(n))
	for _, e := range elems {
		out = append(out, e...)
	}
	return append(out, 0)
}

// element is the raw element key: v.
func element(key string, v bson.RawValue) []byte {
	out := make([]byte, 0, 2+len(key)+len(v.Value))
	out = append(out, byte(v.Type))
	out = append(out, key...)
	out = append(out, 0)
	return append(out, v.Value...)
}

// replaceElement returns doc with the value of key replaced by v.
func replaceElement(doc bson.Raw, key string, v bson.RawValue) (bson.Raw, error) {
	elems, err := doc.Elements()
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(elems))
	for i, e := range elems {
		if e.Key() == key {
			out[i] = element(key, v)
		} else {
			out[i] = e
		}
	}
	return document(out...), nil
}

func docValue(d bson.Raw) bson.RawValue {
	return bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: d}
}

func arrayValue(docs ...bson.Raw) bson.RawValue {
	elems := make([][]byte, len(docs))
	for i, d := range docs {
		elems[i] = element(fmt.Sprint(i), docValue(d))
	}
	return bson.RawValue{Type: bson.TypeArray, Value: document(elems...)}
}

// match says how a stored value compares with a filter's equality value.
type match int

const (
	unsure match = iota // the front cannot tell: let the server decide
	equal
	unequal
)

// compareEq decides {key: want} against the stored value the way MongoDB's
// equality does, for the simple types only: numbers of any type compare by
// value, other types only with their own type; a missing field equals only
// null (left to the server). Arrays (whose elements may match), null,
// documents and the rest are unsure.
func compareEq(stored bson.RawValue, present bool, want bson.RawValue) match {
	if !simpleType(want.Type) {
		return unsure
	}
	if !present {
		return unequal
	}
	if !simpleType(stored.Type) {
		return unsure
	}
	if isNumber(want.Type) && isNumber(stored.Type) {
		return compareNumbers(stored, want)
	}
	if stored.Type != want.Type {
		return unequal
	}
	if string(stored.Value) == string(want.Value) {
		return equal
	}
	if stored.Type == bson.TypeBoolean {
		// A boolean byte other than 0 or 1 is malformed; let the server say.
		if stored.Value[0] > 1 || want.Value[0] > 1 {
			return unsure
		}
	}
	return unequal
}

func simpleType(t bson.Type) bool {
	switch t {
	case bson.TypeString, bson.TypeInt32, bson.TypeInt64, bson.TypeDouble,
		bson.TypeBoolean, bson.TypeDateTime, bson.TypeObjectID:
		return true
	}
	return false
}

func isNumber(t bson.Type) bool {
	return t == bson.TypeInt32 || t == bson.TypeInt64 || t == bson.TypeDouble
}

func compareNumbers(a, b bson.RawValue) match {
	ai, aInt := intOf(a)
	bi, bInt := intOf(b)
	if aInt && bInt {
		if ai == bi {
			return equal
		}
		return unequal
	}
	af, bf, ok := floatOf(a), floatOf(b), true
	if math.IsNaN(af) || math.IsNaN(bf) {
		return unsure
	}
	// An integer beyond 2^53 has no exact double: let the server compare.
	if (aInt && (ai > 1<<53 || ai < -(1<<53))) || (bInt && (bi > 1<<53 || bi < -(1<<53))) {
		ok = false
	}
	if !ok {
		return unsure
	}
	if af == bf {
		return equal
	}
	return unequal
}

func intOf(v bson.RawValue) (int64, bool) {
	switch v.Type {
	case bson.TypeInt32:
		return int64(v.Int32()), true
	case bson.TypeInt64:
		return v.Int64(), true
	}
	return 0, false
}

func floatOf(v bson.RawValue) float64 {
	if i, ok := intOf(v); ok {
		return float64(i)
	}
	return v.Double()
}
