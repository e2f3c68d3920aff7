package api_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// replyHolder is a TCP proxy on loopback in front of the store that can
// hold back the reply to one chosen command: the store executes the
// command, and the client sees no answer until its deadline passes, as
// with a slow network or a failover.
type replyHolder struct {
	ln     net.Listener
	target string

	mu   sync.Mutex
	arm  *hold
	open []net.Conn
}

type hold struct {
	command, collection string
	held                chan struct{} // closed once the reply is held
	// request, when set, holds the request instead of the reply, until
	// release is closed; then it is sent on a connection of its own.
	request  bool
	release  chan struct{}
	executed chan error
}

func newReplyHolder(t *testing.T, uri string) *replyHolder {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyHolder{ln: ln, target: u.Host}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// URI is the proxy's connection string.
func (p *replyHolder) URI() string {
	return "mongodb://" + p.ln.Addr().String() + "/?directConnection=true"
}

// Hold arms the proxy: the reply to the next command named command on
// collection is never forwarded. The channel closes once that reply came
// back from the store, that is once the store executed the command.
func (p *replyHolder) Hold(command, collection string) <-chan struct{} {
	h := &hold{command: command, collection: collection, held: make(chan struct{})}
	p.mu.Lock()
	p.arm = h
	p.mu.Unlock()
	return h.held
}

// HoldRequest arms the proxy: the next command named command on
// collection reaches the store only when release is called, late, as a
// write delayed in the network would; release returns once the store
// answered it.
func (p *replyHolder) HoldRequest(command, collection string) (held <-chan struct{}, release func() error) {
	h := &hold{command: command, collection: collection, held: make(chan struct{}), request: true,
		release: make(chan struct{}), executed: make(chan error, 1)}
	p.mu.Lock()
	p.arm = h
	p.mu.Unlock()
	return h.held, func() error { close(h.release); return <-h.executed }
}

// sendLate sends a held request on a connection of its own and waits for
// the store's answer.
func (p *replyHolder) sendLate(h *hold, msg []byte) {
	<-h.release
	c, err := net.Dial("tcp", p.target)
	if err != nil {
		h.executed <- err
		return
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		h.executed <- err
		return
	}
	_, err = readMessage(c)
	h.executed <- err
}

func (p *replyHolder) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.open {
		_ = c.Close()
	}
}

func (p *replyHolder) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.open = append(p.open, client, server)
		p.mu.Unlock()
		var mu sync.Mutex
		var heldID int32 = -1
		var h *hold
		go func() {
			defer client.Close()
			defer server.Close()
			// Client to server: spot the armed command.
			for {
				msg, err := readMessage(client)
				if err != nil {
					return
				}
				if cmd, coll, ok := commandOf(msg); ok {
					p.mu.Lock()
					if a := p.arm; a != nil && a.request && a.command == cmd && a.collection == coll {
						p.arm = nil
						p.mu.Unlock()
						close(a.held)
						go p.sendLate(a, msg)
						// This connection never hears back.
						_, _ = io.Copy(io.Discard, client)
						return
					}
					if p.arm != nil && p.arm.command == cmd && p.arm.collection == coll {
						mu.Lock()
						heldID, h = int32(binary.LittleEndian.Uint32(msg[4:8])), p.arm
						mu.Unlock()
						p.arm = nil
					}
					p.mu.Unlock()
				}
				if _, err := server.Write(msg); err != nil {
					return
				}
			}
		}()
		go func() {
			defer client.Close()
			defer server.Close()
			// Server to client: drop the held reply.
			for {
				msg, err := readMessage(server)
				if err != nil {
					return
				}
				mu.Lock()
				held := h != nil && int32(binary.LittleEndian.Uint32(msg[8:12])) == heldID
				mu.Unlock()
				if held {
					close(h.held)
					// The connection is stuck from here: the
					// client gives up on it at its deadline.
					_, _ = io.Copy(io.Discard, server)
					return
				}
				if _, err := client.Write(msg); err != nil {
					return
				}
			}
		}()
	}
}

// readMessage reads one wire protocol message (its length comes first).
func readMessage(r io.Reader) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(head[:]))
	if n < 16 || n > 64<<20 {
		return nil, io.ErrUnexpectedEOF
	}
	msg := make([]byte, n)
	copy(msg, head[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}

// commandOf returns the command name and collection of an OP_MSG whose
// body's first element is {command: "collection"}.
func commandOf(msg []byte) (string, string, bool) {
	const opMsg = 2013
	if len(msg) < 27 || binary.LittleEndian.Uint32(msg[12:16]) != opMsg || msg[20] != 0 {
		return "", "", false
	}
	body := msg[21:]
	if body[4] != 0x02 { // a string value
		return "", "", false
	}
	key := body[5:]
	end := bytes.IndexByte(key, 0)
	if end < 0 || len(key) < end+5 {
		return "", "", false
	}
	n := int(binary.LittleEndian.Uint32(key[end+1 : end+5]))
	if n < 1 || len(key) < end+5+n {
		return "", "", false
	}
	return string(key[:end]), string(key[end+5 : end+5+n-1]), true
}
