package embedded

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"golang.org/x/sync/errgroup"
)

// The front's read path for lookups of several documents by _id.
// FerretDB v1.24 (SQLite) pushes a filter down to SQL only when it is
// exactly {_id: <string or ObjectID>}: a find of {_id: {$in: [k1, k2, …]}}
// reads the whole collection (1.6 s for 20 keys at 20,000 documents),
// where MongoDB answers it from its _id index. The front answers such a
// find itself with one lookup by _id per distinct key, inLookups in
// flight on its own backend connections, and replies as the server
// would: every document found, once, in a single first batch with no
// cursor left open, in _id order (MongoDB's index order; FerretDB's scan
// gives insertion order, and without a sort no order is promised).
//
// Only a find whose filter is exactly that, with keys that are strings or
// ObjectIDs, an optional sort on _id alone, and no projection, limit,
// skip, hint, collation, read concern or transaction, is answered; a
// batchSize smaller than the answer, a list of more than maxInKeys keys or
// an answer too large for one reply goes to the server too, which then
// keeps the cursor. Anything else is forwarded as it came.

// inLookups is how many lookups by _id of one find are in flight at once.
const inLookups = 8

// maxInKeys bounds the keys of a find the front answers.
const maxInKeys = 1000

// maxReplyDoc is the largest reply document the front builds: MongoDB's
// maxBsonObjectSize.
const maxReplyDoc = 16 << 20

// findFields are the fields of a find command the front answers with;
// a find with any other goes to the server.
var findFields = map[string]bool{
	"find": true, "filter": true, "sort": true, "batchSize": true, "singleBatch": true,
	"$db": true, "lsid": true, "$clusterTime": true, "$readPreference": true, "comment": true, "maxTimeMS": true,
}

// findIn is a parsed find by a list of _id.
type findIn struct {
	db, coll string
	keys     []bson.RawValue // distinct, in _id order
	desc     bool
	batch    int64 // the batchSize asked for; 0 when none
}

// parseFindIn reads m as a find the front answers; ok is false when it is
// not one (see the comment at the top).
func parseFindIn(m *opMessage) (findIn, bool) {
	var f findIn
	if len(m.seqs) != 0 {
		return f, false
	}
	elems, err := m.body.Elements()
	if err != nil || len(elems) == 0 || elems[0].Key() != "find" {
		return f, false
	}
	for _, e := range elems {
		if !findFields[e.Key()] {
			return f, false
		}
	}
	f.coll, _ = elems[0].Value().StringValueOK()
	f.db, _ = m.body.Lookup("$db").StringValueOK()
	if f.coll == "" || f.db == "" {
		return f, false
	}
	if v, err := m.body.LookupErr("batchSize"); err == nil {
		n, ok := intOf(v)
		if !ok || n < 0 {
			return f, false
		}
		f.batch = n
	}
	if v, err := m.body.LookupErr("sort"); err == nil {
		desc, ok := idSort(v)
		if !ok {
			return f, false
		}
		f.desc = desc
	}
	filter, ok := m.body.Lookup("filter").DocumentOK()
	if !ok {
		return f, false
	}
	fe, err := filter.Elements()
	if err != nil || len(fe) != 1 || fe[0].Key() != "_id" {
		return f, false
	}
	cond, ok := fe[0].Value().DocumentOK()
	if !ok {
		return f, false
	}
	ce, err := cond.Elements()
	if err != nil || len(ce) != 1 || ce[0].Key() != "$in" {
		return f, false
	}
	arr, ok := ce[0].Value().ArrayOK()
	if !ok {
		return f, false
	}
	vals, err := arr.Values()
	if err != nil || len(vals) > maxInKeys {
		return f, false
	}
	for _, v := range vals {
		if v.Type != bson.TypeString && v.Type != bson.TypeObjectID {
			return f, false
		}
	}
	slices.SortFunc(vals, compareIDs)
	f.keys = slices.CompactFunc(vals, func(a, b bson.RawValue) bool { return compareIDs(a, b) == 0 })
	if f.desc {
		slices.Reverse(f.keys)
	}
	return f, true
}

// idSort reads a sort of {_id: 1} or {_id: -1}; ok is false for any other.
func idSort(v bson.RawValue) (desc, ok bool) {
	d, isDoc := v.DocumentOK()
	if !isDoc {
		return false, false
	}
	elems, err := d.Elements()
	if err != nil || len(elems) != 1 || elems[0].Key() != "_id" {
		return false, false
	}
	dir := elems[0].Value()
	var n float64
	switch dir.Type {
	case bson.TypeInt32, bson.TypeInt64, bson.TypeDouble:
		n = floatOf(dir)
	default:
		return false, false
	}
	switch n {
	case 1:
		return false, true
	case -1:
		return true, true
	}
	return false, false
}

// compareIDs orders two _id values of the types findIn takes as MongoDB
// does: strings (by their bytes, the simple collation) before ObjectIDs
// (by their 12 bytes).
func compareIDs(a, b bson.RawValue) int {
	if a.Type != b.Type {
		if a.Type == bson.TypeString {
			return -1
		}
		return 1
	}
	if a.Type == bson.TypeString {
		return strings.Compare(a.StringValue(), b.StringValue())
	}
	return bytes.Compare(a.Value, b.Value)
}

// answerFindIn answers f with a lookup by _id per key. ok is false when
// the server should answer it after all (the answer does not fit one
// batch, or a lookup failed in a way the server may explain).
func (p *proxy) answerFindIn(m *opMessage, f findIn) (reply []byte, ok bool, err error) {
	found := make([]bson.Raw, len(f.keys))
	g := errgroup.Group{}
	g.SetLimit(inLookups)
	for i, k := range f.keys {
		g.Go(func() error {
			d, hit, err := p.findByID(f.db, f.coll, k)
			if hit {
				found[i] = d
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		if errors.Is(err, errBackend) {
			return nil, false, err
		}
		return nil, false, nil
	}
	batch := make([][]byte, 0, len(found))
	size := 0
	for _, d := range found {
		if d == nil {
			continue
		}
		batch = append(batch, element(fmt.Sprint(len(batch)), docValue(d)))
		size += len(d) + 8
	}
	if size > maxReplyDoc-1024 || (f.batch > 0 && int64(len(batch)) > f.batch) {
		return nil, false, nil
	}
	cursor := document(
		element("firstBatch", bson.RawValue{Type: bson.TypeArray, Value: document(batch...)}),
		element("id", bson.RawValue{Type: bson.TypeInt64, Value: make([]byte, 8)}),
		element("ns", bson.RawValue{Type: bson.TypeString, Value: stringValue(f.db + "." + f.coll)}),
	)
	body := document(element("cursor", docValue(cursor)), element("ok", okOne))
	return message(p.nextID(), m.requestID, body), true, nil
}
