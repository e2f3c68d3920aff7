package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// chaosProxy sits between the services and the store. It forwards every
// connection as it is, except during a delay window: then each reply to a
// write (insert, update, delete, findAndModify) is held back, with a given
// probability, for longer than the services' request deadlines. The store
// has done the write; its answer arrives after the caller gave up. That is
// the ambiguous failure of a slow store, a failover or a lost packet,
// which a retry must survive. Replies to reads and to the driver's
// heartbeats pass, so the window is not simply an outage.
//
// The MongoDB driver runs one operation at a time on a connection, so
// holding back the reply on one connection delays exactly one operation,
// and the command the connection last carried is the one replied to.
type chaosProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	rnd   *rand.Rand
	until time.Time     // end of the delay window
	delay time.Duration // how long a held reply waits
	prob  float64       // the share of replies held
	conns map[net.Conn]struct{}
	shut  bool
	wg    sync.WaitGroup

	held     atomic.Int64   // replies held back, over all windows
	heldWhat map[string]int // of which, by command and collection
}

// newChaosProxy forwards the connections accepted on ln to target.
func newChaosProxy(ln net.Listener, target string, seed uint64) *chaosProxy {
	p := &chaosProxy{ln: ln, target: target, rnd: rand.New(rand.NewPCG(seed, 0x70726f7879)), conns: map[net.Conn]struct{}{}, heldWhat: map[string]int{}}
	p.wg.Add(1)
	go p.accept()
	return p
}

func (p *chaosProxy) Addr() string { return p.ln.Addr().String() }

// delayReplies opens a delay window of length window: until it ends, each
// reply chunk read from the store is held for delay with probability prob.
func (p *chaosProxy) delayReplies(window, delay time.Duration, prob float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.until, p.delay, p.prob = time.Now().Add(window), delay, prob
}

// hold says how long a reply to command, read now, waits before it is
// forwarded.
func (p *chaosProxy) hold(command string) time.Duration {
	if !chaosIsWrite(command) {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Now().After(p.until) || p.rnd.Float64() >= p.prob {
		return 0
	}
	p.held.Add(1)
	p.heldWhat[command]++
	return p.delay
}

func (p *chaosProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// track registers c so that Close can cut it; false once closed.
func (p *chaosProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *chaosProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *chaosProxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		// The store is down: the client sees its connection refused.
		_ = client.Close()
		return
	}
	if !p.track(client) || !p.track(server) {
		_ = client.Close()
		_ = server.Close()
		return
	}
	done := make(chan struct{})
	var once sync.Once
	cut := func() {
		once.Do(func() {
			close(done)
			_ = client.Close()
			_ = server.Close()
			p.untrack(client)
			p.untrack(server)
		})
	}
	var command atomic.Value // the name of the last command sent
	command.Store("")
	var both sync.WaitGroup
	both.Add(2)
	go func() {
		defer both.Done()
		defer cut()
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if name, ok := opMsgCommand(buf[:n]); ok {
					command.Store(name)
				}
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer both.Done()
		defer cut()
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				if d := p.hold(command.Load().(string)); d > 0 {
					select {
					case <-time.After(d):
					case <-done:
						return
					}
				}
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	both.Wait()
}

// Close stops accepting, cuts every connection and waits for the copies.
func (p *chaosProxy) Close() {
	p.mu.Lock()
	p.shut = true
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
}

// chaosIsWrite says whether command ("insert campaigns") is a write, whose
// reply a delay window holds.
func chaosIsWrite(command string) bool {
	name, _, _ := strings.Cut(command, " ")
	return name == "insert" || name == "update" || name == "delete" || name == "findAndModify"
}

// heldCounts says which replies were held: "insert campaigns 3, ...".
func (p *chaosProxy) heldCounts() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, k := range slices.Sorted(maps.Keys(p.heldWhat)) {
		out = append(out, fmt.Sprintf("%s %d", k, p.heldWhat[k]))
	}
	return strings.Join(out, ", ")
}

// opMsgCommand reads the command of a MongoDB OP_MSG that starts at b: a
// 16-byte header whose opCode is 2013, the flag bits, a body section (kind
// 0) holding a BSON document whose first element's name is the command
// and, when it is a string, its value the collection ("insert
// campaigns"). ok is false for anything else (the rest of a long
// message).
func opMsgCommand(b []byte) (string, bool) {
	const header, opMsg, bsonString = 16, 2013, 0x02
	if len(b) < header+4+1+4+1+1 || binary.LittleEndian.Uint32(b[12:16]) != opMsg || b[header+4] != 0 {
		return "", false
	}
	elem := b[header+4+1+4:]
	kind, rest := elem[0], elem[1:]
	end := bytes.IndexByte(rest, 0)
	if end <= 0 {
		return "", false
	}
	name, rest := string(rest[:end]), rest[end+1:]
	if kind == bsonString && len(rest) >= 4 {
		if n := int(binary.LittleEndian.Uint32(rest)); n > 1 && len(rest) >= 4+n {
			name += " " + string(rest[4:4+n-1])
		}
	}
	return name, true
}

// TestChaosProxyReadsCommands: the proxy names the command of an OP_MSG
// as the driver encodes it, and nothing else.
func TestChaosProxyReadsCommands(t *testing.T) {
	t.Parallel()
	msg := func(doc bson.D) []byte {
		body, err := bson.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 16+4+1, 16+4+1+len(body))
		binary.LittleEndian.PutUint32(b[0:], uint32(cap(b)))
		binary.LittleEndian.PutUint32(b[12:], 2013)
		return append(b, body...)
	}
	for _, c := range []struct {
		in   []byte
		want string
		ok   bool
	}{
		{msg(bson.D{{Key: "insert", Value: "campaigns"}, {Key: "$db", Value: "rcm_campaign"}}), "insert campaigns", true},
		{msg(bson.D{{Key: "hello", Value: int32(1)}}), "hello", true},
		{msg(bson.D{{Key: "findAndModify", Value: "idempotency"}}), "findAndModify idempotency", true},
		{[]byte("the middle of a long message"), "", false},
	} {
		got, ok := opMsgCommand(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("got %q %v, want %q %v", got, ok, c.want, c.ok)
		}
	}
	if chaosIsWrite("") || chaosIsWrite("hello") || !chaosIsWrite("insert campaigns") || !chaosIsWrite("findAndModify") {
		t.Error("writes are insert, update, delete and findAndModify")
	}
}
