package embedded

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// proxy is the front of the embedded MongoDB server: it forwards the
// connections accepted on a public listener to FerretDB, serializes the
// single-document writes and answers compare-and-set filters without a
// scan, queues each database's writes in the order they came (see
// front.go), and can drop every connection at once.
//
// FerretDB, on shutdown, stops accepting but lets open connections go on
// for up to three seconds; a fault test wants the server gone when Close
// returns, and a restart should not cost three seconds. Requests are read
// message by message; replies are spliced by the kernel. Both cost far less
// than FerretDB's own work per command.
type proxy struct {
	ln      net.Listener
	backend string
	locks   idLocks
	gates   writeGates
	idle    chan *ownConn // the front's own idle backend connections
	ids     atomic.Int32
	// How many writes the front serialized, of which how many it answered
	// itself (the conditions failed) and how many it sent with the filter
	// reduced to _id; tests read them.
	serialized, answered, reduced atomic.Int64
	// How many finds of {_id: {$in: [...]}} the front answered with
	// lookups by _id (see findin.go); tests read it.
	inSplit atomic.Int64
	// How many writes went through their database's gate.
	gated atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newProxy(ln net.Listener, backend string) *proxy {
	p := &proxy{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}, idle: make(chan *ownConn, 16)}
	p.wg.Add(1)
	go p.accept()
	return p
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// track registers c for Close; it reports false when the proxy is closed.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer client.Close()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	defer server.Close()
	if !p.track(server) {
		return
	}
	defer p.untrack(server)

	// Replies: spliced. Either side ending ends both: a half-open MongoDB
	// connection is of no use to anyone.
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(client, server)
		_ = client.Close()
	}()
	p.requests(client, server)
	_ = server.Close()
	_ = client.Close()
	<-done
}

// requests reads the client's messages one by one: a write the front
// serializes is answered by frontConn.handle, anything else goes to server
// as it came.
func (p *proxy) requests(client, server net.Conn) {
	f := &frontConn{p: p}
	r := bufio.NewReaderSize(client, 64<<10)
	var buf []byte
	for {
		msg, err := readMessage(r, buf)
		if err != nil {
			return
		}
		buf = msg
		answer, err := f.handle(msg)
		if err != nil {
			return
		}
		dst, out := server, msg
		if answer != nil {
			// The client waits for this reply before it sends again, and
			// no reply of the server is in flight (see frontConn.plain):
			// nothing else writes to client meanwhile.
			dst, out = client, answer
		}
		if _, err := dst.Write(out); err != nil {
			return
		}
	}
}

// Close stops accepting, drops every open connection and waits for the
// copies to end.
func (p *proxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
