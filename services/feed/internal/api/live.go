package api

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rcm-platform/rcm/services/feed/internal/hub"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
)

// A stream that net/http serves holds the connection's goroutine, deep in
// the handler chain, with its buffers, and net/http's own goroutine that
// watches for the client to go: some 40 KiB per stream. Once a stream
// has answered 200, the handler takes the connection over from net/http
// (Hijack) and returns, and the stream is a liveStream: a small struct,
// one goroutine blocked in a one-byte read that sees the client go, and a
// writer goroutine only while there is something to write (items, a
// heartbeat, the end). The response is HTTP/1.1 chunked, as net/http
// would have written it.

// liveStream is one stream whose connection the handler took over.
type liveStream struct {
	h       *Handler
	conn    net.Conn
	account string
	reqID   string
	sub     *hub.Subscription
	st      *store.Stream
	beat    *time.Timer

	mu      sync.Mutex
	pending bool // something to write: items, a heartbeat, or the end
	running bool // a goroutine writes (the handler's, until it hands over)
	due     bool // a heartbeat is due
	ending  bool // write the last chunk and close
	closed  bool
}

// hijackable reports whether w (or one it wraps) can hand its connection
// over, and the request's protocol lets a stream be written by hand.
func hijackable(w http.ResponseWriter, r *http.Request) bool {
	if !r.ProtoAtLeast(1, 1) || r.ProtoMajor != 1 {
		return false
	}
	for {
		if _, ok := w.(http.Hijacker); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}

// wake says that something waits to be written, and starts a writer
// unless one runs. The hub calls it with its lock held: it only takes the
// stream's own lock.
func (ls *liveStream) wake() {
	ls.mu.Lock()
	ls.pending = true
	start := !ls.running && !ls.closed
	if start {
		ls.running = true
	}
	ls.mu.Unlock()
	if start {
		go ls.write()
	}
}

// handOver ends the handler's turn as the writer: what came meanwhile is
// written by a goroutine of its own.
func (ls *liveStream) handOver() {
	ls.mu.Lock()
	start := ls.pending && !ls.closed
	ls.running = start
	ls.mu.Unlock()
	if start {
		go ls.write()
	}
}

// heartbeat is the timer's: a heartbeat is due.
func (ls *liveStream) heartbeat() {
	ls.mu.Lock()
	ls.due = true
	closed := ls.closed
	ls.mu.Unlock()
	if closed {
		return
	}
	ls.wake()
	ls.beat.Reset(ls.h.cfg.Heartbeat)
}

// end asks the stream to write its last chunk and close.
func (ls *liveStream) end() {
	ls.mu.Lock()
	ls.ending = true
	ls.mu.Unlock()
	ls.wake()
}

// write writes what waits until nothing does.
func (ls *liveStream) write() {
	for {
		ls.mu.Lock()
		if !ls.pending || ls.closed {
			ls.running = false
			ls.mu.Unlock()
			return
		}
		ls.pending = false
		due, ending := ls.due, ls.ending
		ls.due = false
		ls.mu.Unlock()
		if ending {
			ls.finish()
			return
		}
		entries, dropped := ls.sub.Take()
		var out []byte
		send := func(d store.Delivery) error {
			out = appendItem(out, d.Item, d.JSON)
			ls.h.delivered(d)
			return nil
		}
		var failed error
		if len(entries) > 0 {
			// A gap is filled from the store: bounded, since the request's
			// context ended with the handler.
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			for _, e := range entries {
				if failed = ls.st.Live(ctx, e.Item, e.JSON, send); failed != nil {
					break
				}
			}
			cancel()
		}
		if due && len(out) == 0 {
			out = appendComment(out, "heartbeat")
		}
		if len(out) > 0 && ls.chunk(out) != nil {
			ls.close()
			return
		}
		if failed != nil {
			ls.h.logEnd(ls.reqID, ls.account, failed)
			ls.finish()
			return
		}
		if dropped != nil {
			ls.h.cfg.Logger.Info("stream subscriber dropped", slog.String("request_id", ls.reqID),
				slog.String("account_id", ls.account), slog.Any("reason", dropped))
			ls.finish()
			return
		}
	}
}

// chunk writes b as one chunk of the response.
func (ls *liveStream) chunk(b []byte) error {
	framed := make([]byte, 0, len(b)+16)
	framed = strconv.AppendInt(framed, int64(len(b)), 16)
	framed = append(framed, "\r\n"...)
	framed = append(framed, b...)
	framed = append(framed, "\r\n"...)
	return ls.send(framed)
}

func (ls *liveStream) send(b []byte) error {
	if err := ls.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err := ls.conn.Write(b)
	return err
}

// finish ends the response with its last chunk and closes the connection.
func (ls *liveStream) finish() {
	_ = ls.send([]byte("0\r\n\r\n"))
	ls.close()
}

// watch reads from the connection until it fails, which it does when the
// client goes or the stream closes it. A client sends nothing on a
// stream; a byte it does send is dropped.
func (ls *liveStream) watch() {
	var b [1]byte
	for {
		if _, err := ls.conn.Read(b[:]); err != nil {
			ls.close()
			return
		}
	}
}

// close closes the connection and unsubscribes, once.
func (ls *liveStream) close() {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return
	}
	ls.closed = true
	ls.mu.Unlock()
	ls.beat.Stop()
	_ = ls.conn.Close()
	ls.sub.Close()
	ls.h.release(ls)
}

// head is the response's status line and headers: w's (the request id
// among them) and the stream's own.
func head(hdr http.Header) []byte {
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	hdr = hdr.Clone()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Set("Transfer-Encoding", "chunked")
	hdr.Set("Connection", "close")
	hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	_ = hdr.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// liveStreams is every stream taken over, to end them at Stop.
type liveStreams struct {
	once sync.Once
	mu   sync.Mutex
	all  map[*liveStream]struct{}
	done chan struct{} // closed once Stop came and every stream closed
	stop bool
}

// adopt registers ls, and ends it at once if Stop came already.
func (h *Handler) adopt(ls *liveStream) {
	h.live.once.Do(func() {
		h.live.mu.Lock()
		h.live.all = map[*liveStream]struct{}{}
		h.live.done = make(chan struct{})
		h.live.mu.Unlock()
		go h.endAtStop()
	})
	h.live.mu.Lock()
	h.live.all[ls] = struct{}{}
	stopped := h.live.stop
	h.live.mu.Unlock()
	if stopped {
		ls.end()
	}
}

// release forgets a closed stream.
func (h *Handler) release(ls *liveStream) {
	h.live.mu.Lock()
	delete(h.live.all, ls)
	last := h.live.stop && len(h.live.all) == 0
	h.live.mu.Unlock()
	h.streams.Dec()
	h.open.Add(-1)
	if last {
		h.live.closeDone()
	}
}

func (l *liveStreams) closeDone() {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
}

// endAtStop ends every stream taken over once Stop is closed.
func (h *Handler) endAtStop() {
	<-h.cfg.Stop
	h.live.mu.Lock()
	h.live.stop = true
	all := make([]*liveStream, 0, len(h.live.all))
	for ls := range h.live.all {
		all = append(all, ls)
	}
	if len(all) == 0 {
		h.live.closeDone()
	}
	h.live.mu.Unlock()
	for _, ls := range all {
		ls.end()
	}
}

// Wait waits, once Stop is closed, until every stream taken over has
// written its last chunk and closed, or ctx ends. net/http's shutdown
// does not wait for connections taken over from it.
func (h *Handler) Wait(ctx context.Context) {
	h.live.mu.Lock()
	done := h.live.done
	h.live.mu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}
