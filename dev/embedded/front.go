package embedded

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The front's write path. FerretDB v1.24 (SQLite) runs an update or delete
// as a read, then a write, in separate steps, so two clients writing one
// document interleave and lose writes; and it turns a filter into SQL only
// when it is exactly {_id: <string or ObjectID>}, so a compare-and-set
// filter such as {_id, revision} reads the whole collection. The front
// fixes both for single-document writes:
//
//   - an update, delete or findAndModify whose every statement filters on
//     _id equality holds a lock per (database, collection, _id) across all
//     connections from the moment it is read until its reply is back, and
//     runs on a backend connection of the front's own, so that its reply
//     (and the end of the write) is seen;
//   - when a single such statement also requires other top-level fields to
//     equal simple values ({_id: X, revision: 5}), the front reads the
//     document by _id alone under the lock and checks them itself: if they
//     hold it forwards the write with its filter reduced to {_id: X}; if
//     they do not, it answers what the server would for no match (n: 0);
//     an upsert whose conditions do not hold, a collation, an array or any
//     type it does not compare goes to the server unchanged.
//
// The check holds only against writes that take the lock: a write filtered
// on anything else (an updateMany by account, say) is not serialized and
// may change the document between the front's read and its write.
//
// And it queues the writes of each database (one SQLite file, one writer
// at a time) in the order they came: every write command (inserts and
// writes filtered on anything else included) goes to FerretDB on a
// connection of the front's own once the writes of its database that came
// before it have their replies. SQLite's own wait for its write lock is a
// busy handler that sleeps 1, 2, 5, … up to 100 ms between tries, so with
// many writers the one that came last may get the lock first and another
// waits for seconds (measured: BenchmarkInsertOneConcurrent). The queue
// changes only who goes when: SQLite's lock still decides what is
// consistent, and a write that reaches FerretDB another way is as correct
// as before, only not queued.
//
// A find of a list of _id is answered by lookups by _id (findin.go).
// Everything else (other reads, OP_COMPRESSED, checksummed or moreToCome
// messages) is forwarded as it came on the client's own backend
// connection; replies come back by a kernel splice. A connection that asks for exhausting replies or sends
// moreToCome is forwarded as it comes from then on: the front's own replies
// could then cross the server's, or overtake a write still unacknowledged.

// backendTimeout bounds one exchange of the front with FerretDB.
const backendTimeout = time.Minute

// idLocks holds one mutex per document key while some write uses it.
type idLocks struct {
	mu sync.Mutex
	m  map[string]*idLock
}

type idLock struct {
	sync.Mutex
	refs int
}

// lock takes the locks of keys (sorted, without duplicates, so two writes
// never wait for each other in a circle) and returns their release.
func (l *idLocks) lock(keys []string) func() {
	slices.Sort(keys)
	keys = slices.Compact(keys)
	held := make([]*idLock, len(keys))
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*idLock{}
	}
	for i, k := range keys {
		lk := l.m[k]
		if lk == nil {
			lk = &idLock{}
			l.m[k] = lk
		}
		lk.refs++
		held[i] = lk
	}
	l.mu.Unlock()
	for _, lk := range held {
		lk.Lock()
	}
	return func() {
		for _, lk := range held {
			lk.Unlock()
		}
		l.mu.Lock()
		for i, lk := range held {
			if lk.refs--; lk.refs == 0 {
				delete(l.m, keys[i])
			}
		}
		l.mu.Unlock()
	}
}

// writeGates queues the writes of each database: one at a time, in the
// order they came (waiting senders on a channel are woken first in,
// first out, and the freed slot is handed to the first of them). A gate
// is kept for every database written while the server runs, a few dozen
// bytes each.
type writeGates struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// enter waits for db's turn and returns its end.
func (g *writeGates) enter(db string) (leave func()) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]chan struct{}{}
	}
	gate := g.m[db]
	if gate == nil {
		gate = make(chan struct{}, 1)
		g.m[db] = gate
	}
	g.mu.Unlock()
	gate <- struct{}{}
	return func() { <-gate }
}

// gatedCommands are the commands that write (lower case): each waits for
// its database's turn. An aggregate with $out or $merge writes too, and
// goes ungated: rare, and as correct without the queue.
var gatedCommands = map[string]bool{
	"insert": true, "update": true, "delete": true, "findandmodify": true,
	"create": true, "createindexes": true, "drop": true, "dropdatabase": true,
	"dropindexes": true, "renamecollection": true, "collmod": true,
}

// idKey names a document for the locks; ok is false unless v is an
// equality value of a type _id commonly has. Integers of either width are
// one key, as MongoDB finds either with the other.
func idKey(db, coll string, v bson.RawValue) (string, bool) {
	var val string
	switch v.Type {
	case bson.TypeString, bson.TypeObjectID, bson.TypeDateTime:
		val = string(byte(v.Type)) + string(v.Value)
	case bson.TypeInt32, bson.TypeInt64:
		i, _ := intOf(v)
		val = fmt.Sprintf("i%d", i)
	default:
		return "", false
	}
	return db + "\x00" + coll + "\x00" + val, true
}

// writeKind describes one write command: where its statements are, and
// which field of a statement holds the filter.
type writeKind struct {
	list, filter string // list "" means the body is the one statement
	noMatch      func(stmt bson.Raw) bson.Raw
}

var (
	okOne = bson.RawValue{Type: bson.TypeDouble, Value: binary.LittleEndian.AppendUint64(nil, 0x3ff0000000000000)}
	zero  = bson.RawValue{Type: bson.TypeInt32, Value: []byte{0, 0, 0, 0}}
	null  = bson.RawValue{Type: bson.TypeNull}
	no    = bson.RawValue{Type: bson.TypeBoolean, Value: []byte{0}}
)

// The replies FerretDB (and MongoDB) give when a statement matches nothing.
var writeKinds = map[string]writeKind{
	"update": {list: "updates", filter: "q", noMatch: func(bson.Raw) bson.Raw {
		return document(element("n", zero), element("nModified", zero), element("ok", okOne))
	}},
	"delete": {list: "deletes", filter: "q", noMatch: func(bson.Raw) bson.Raw {
		return document(element("n", zero), element("ok", okOne))
	}},
	"findandmodify": {filter: "query", noMatch: func(stmt bson.Raw) bson.Raw {
		last := []([]byte){element("n", zero)}
		if remove, _ := stmt.Lookup("remove").BooleanOK(); !remove {
			last = append(last, element("updatedExisting", no))
		}
		return document(element("lastErrorObject", docValue(document(last...))), element("value", null), element("ok", okOne))
	}},
}

// frontConn is the front's state for one client connection.
type frontConn struct {
	p *proxy
	// plain is set once the connection sent a message after which the
	// front must not answer for the server (see the package comment).
	plain bool
}

// errBackend says an exchange with FerretDB failed: the client connection
// is dropped, as the server's would be.
var errBackend = errors.New("backend")

// handle answers msg itself when it is a write: serialized per document
// and reduced when it filters on _id, queued for its database's turn in
// any case. It returns the reply to send the client (nil when msg is not
// such a write: forward it).
func (f *frontConn) handle(msg []byte) ([]byte, error) {
	flags, isMsg := opMsgFlags(msg)
	if !isMsg {
		return nil, nil
	}
	if flags&(flagExhaust|flagMore) != 0 {
		f.plain = true
	}
	if f.plain || flags != 0 {
		return nil, nil
	}
	name := strings.ToLower(commandName(msg))
	if name == "find" {
		return f.find(msg)
	}
	if !gatedCommands[name] {
		return nil, nil
	}
	m, err := parseOpMsg(msg)
	if err != nil {
		return nil, nil // the server will say what is wrong with it
	}
	db, _ := m.body.Lookup("$db").StringValueOK()
	if db == "" {
		return nil, nil
	}
	if kind, ok := writeKinds[name]; ok {
		if w, ok := parseWrite(m, kind); ok {
			// The document's lock first, the database's turn after: a
			// write never waits for a lock while its database waits for it.
			release := f.p.locks.lock(w.keys)
			defer release()
			f.p.serialized.Add(1)
			if out, ok := f.reduce(m, w, kind); ok {
				if out == nil {
					f.p.answered.Add(1)
					return message(f.p.nextID(), m.requestID, kind.noMatch(w.stmts[0])), nil
				}
				f.p.reduced.Add(1)
				msg = out
			}
		}
	}
	leave := f.p.gates.enter(db)
	defer leave()
	f.p.gated.Add(1)
	return f.p.roundTrip(msg)
}

// find answers msg itself when it is a find of a list of _id (see
// findin.go); nil means forward it.
func (f *frontConn) find(msg []byte) ([]byte, error) {
	m, err := parseOpMsg(msg)
	if err != nil {
		return nil, nil
	}
	q, ok := parseFindIn(m)
	if !ok {
		return nil, nil
	}
	reply, ok, err := f.p.answerFindIn(m, q)
	if err != nil || !ok {
		return nil, err
	}
	f.p.inSplit.Add(1)
	return reply, nil
}

// write is a parsed write command the front serializes.
type write struct {
	db, coll string
	stmts    []bson.Raw
	keys     []string
	// where the statements are: the body's array (seq < 0) or m.seqs[seq]
	seq int
}

// parseWrite finds the statements of a write and their _id keys; ok is
// false unless every statement filters on _id equality and the command is
// not part of a transaction.
func parseWrite(m *opMessage, kind writeKind) (write, bool) {
	w := write{seq: -1}
	elems, err := m.body.Elements()
	if err != nil || len(elems) == 0 {
		return w, false
	}
	w.coll, _ = elems[0].Value().StringValueOK()
	w.db, _ = m.body.Lookup("$db").StringValueOK()
	if w.coll == "" || w.db == "" {
		return w, false
	}
	if _, err := m.body.LookupErr("startTransaction"); err == nil {
		return w, false
	}
	if _, err := m.body.LookupErr("autocommit"); err == nil {
		return w, false
	}
	switch {
	case kind.list == "":
		w.stmts = []bson.Raw{m.body}
	default:
		if v, err := m.body.LookupErr(kind.list); err == nil {
			arr, ok := v.ArrayOK()
			if !ok {
				return w, false
			}
			vals, err := arr.Values()
			if err != nil {
				return w, false
			}
			for _, v := range vals {
				d, ok := v.DocumentOK()
				if !ok {
					return w, false
				}
				w.stmts = append(w.stmts, d)
			}
		}
		for i, s := range m.seqs {
			if s.id == kind.list {
				if w.stmts != nil {
					return w, false
				}
				w.stmts, w.seq = s.docs, i
			}
		}
	}
	if len(w.stmts) == 0 {
		return w, false
	}
	for _, st := range w.stmts {
		filter, ok := st.Lookup(kind.filter).DocumentOK()
		if !ok {
			return w, false
		}
		key, ok := idKey(w.db, w.coll, filter.Lookup("_id"))
		if !ok {
			return w, false
		}
		w.keys = append(w.keys, key)
	}
	return w, true
}

// reduce checks, for a single statement whose filter holds conditions
// besides _id, those conditions against the stored document. ok is false
// when the message should go to the server as it is; otherwise out is the
// message with the filter reduced to {_id}, or nil when nothing matches.
func (f *frontConn) reduce(m *opMessage, w write, kind writeKind) (out []byte, ok bool) {
	if len(w.stmts) != 1 {
		return nil, false
	}
	stmt := w.stmts[0]
	if _, err := stmt.LookupErr("collation"); err == nil {
		return nil, false
	}
	if _, err := m.body.LookupErr("collation"); err == nil && kind.list != "" {
		return nil, false
	}
	if upsert, _ := stmt.Lookup("upsert").BooleanOK(); upsert {
		return nil, false
	}
	filter := stmt.Lookup(kind.filter).Document()
	elems, err := filter.Elements()
	if err != nil || len(elems) < 2 {
		return nil, false
	}
	var id bson.RawValue
	type cond struct {
		key string
		v   bson.RawValue
	}
	var conds []cond
	for _, e := range elems {
		k := e.Key()
		switch {
		case k == "_id":
			if id.Type != 0 {
				return nil, false // a key twice: let the server decide
			}
			id = e.Value()
		case k == "" || k[0] == '$' || strings.Contains(k, "."):
			return nil, false
		default:
			if !simpleType(e.Value().Type) {
				return nil, false
			}
			conds = append(conds, cond{k, e.Value()})
		}
	}
	stored, found, err := f.p.findByID(w.db, w.coll, id)
	if err != nil {
		return nil, false
	}
	if !found {
		return nil, true
	}
	for _, c := range conds {
		v, err := stored.LookupErr(c.key)
		switch compareEq(v, err == nil, c.v) {
		case unequal:
			return nil, true
		case unsure:
			return nil, false
		}
	}
	byID := document(element("_id", id))
	newStmt, err := replaceElement(stmt, kind.filter, docValue(byID))
	if err != nil {
		return nil, false
	}
	next := &opMessage{requestID: m.requestID, body: m.body, seqs: m.seqs}
	switch {
	case kind.list == "":
		next.body = newStmt
	case w.seq >= 0:
		next.seqs = slices.Clone(m.seqs)
		next.seqs[w.seq] = docSequence{id: m.seqs[w.seq].id, docs: []bson.Raw{newStmt}}
	default:
		body, err := replaceElement(m.body, kind.list, arrayValue(newStmt))
		if err != nil {
			return nil, false
		}
		next.body = body
	}
	return next.encode(0), true
}

// findByID reads one document by _id alone on a backend connection of the
// front's own.
func (p *proxy) findByID(db, coll string, id bson.RawValue) (bson.Raw, bool, error) {
	cmd := document(
		element("find", bson.RawValue{Type: bson.TypeString, Value: stringValue(coll)}),
		element("filter", docValue(document(element("_id", id)))),
		element("limit", bson.RawValue{Type: bson.TypeInt32, Value: []byte{1, 0, 0, 0}}),
		element("singleBatch", bson.RawValue{Type: bson.TypeBoolean, Value: []byte{1}}),
		element("$db", bson.RawValue{Type: bson.TypeString, Value: stringValue(db)}),
	)
	out, err := p.roundTrip(message(p.nextID(), 0, cmd))
	if err != nil {
		return nil, false, err
	}
	m, err := parseOpMsg(out)
	if err != nil {
		return nil, false, err
	}
	if ok, _ := m.body.Lookup("ok").AsFloat64OK(); ok != 1 {
		return nil, false, fmt.Errorf("find by _id: %s", m.body)
	}
	batch, ok := m.body.Lookup("cursor", "firstBatch").ArrayOK()
	if !ok {
		return nil, false, fmt.Errorf("find by _id: %s", m.body)
	}
	vals, err := batch.Values()
	if err != nil || len(vals) > 1 {
		return nil, false, fmt.Errorf("find by _id: %s", m.body)
	}
	if len(vals) == 0 {
		return nil, false, nil
	}
	d, ok := vals[0].DocumentOK()
	if !ok {
		return nil, false, fmt.Errorf("find by _id: %s", m.body)
	}
	return d, true, nil
}

func stringValue(s string) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(s)+1))
	out = append(out, s...)
	return append(out, 0)
}

// nextID numbers the messages the front writes itself.
func (p *proxy) nextID() int32 { return p.ids.Add(1) }

// roundTrip sends msg on one of the front's own backend connections and
// returns the server's reply.
func (p *proxy) roundTrip(msg []byte) ([]byte, error) {
	c, err := p.backendConn()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBackend, err)
	}
	_ = c.conn.SetDeadline(time.Now().Add(backendTimeout))
	if _, err := c.conn.Write(msg); err != nil {
		p.dropBackend(c)
		return nil, fmt.Errorf("%w: %v", errBackend, err)
	}
	out, err := readMessage(c.r, nil)
	if err == nil && responseTo(out) != requestID(msg) {
		err = fmt.Errorf("reply to %d, want %d", responseTo(out), requestID(msg))
	}
	if err != nil {
		p.dropBackend(c)
		return nil, fmt.Errorf("%w: %v", errBackend, err)
	}
	p.idleBackend(c)
	return out, nil
}

// ownConn is one of the front's own connections to FerretDB.
type ownConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func (p *proxy) backendConn() (*ownConn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	conn, err := net.DialTimeout("tcp", p.backend, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if !p.track(conn) {
		_ = conn.Close()
		return nil, net.ErrClosed
	}
	return &ownConn{conn: conn, r: bufio.NewReader(conn)}, nil
}

func (p *proxy) idleBackend(c *ownConn) {
	select {
	case p.idle <- c:
	default:
		p.dropBackend(c)
	}
}

func (p *proxy) dropBackend(c *ownConn) {
	_ = c.conn.Close()
	p.untrack(c.conn)
}
