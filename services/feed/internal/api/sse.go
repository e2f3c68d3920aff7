package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/rcm-platform/rcm/services/feed/internal/activity"
)

// writeTimeout bounds one write to a stream: a client that stops reading
// cannot hold its handler longer than this.
const writeTimeout = 10 * time.Second

// sse writes Server-Sent Events, each flushed at once.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// item writes one item: its cursor as the event id, its type as the event
// name, its JSON (one line) as the data.
func (s *sse) item(it activity.Item, data []byte) error {
	return s.write(appendItem(make([]byte, 0, len(data)+64), it, data))
}

// comment writes an SSE comment, which clients ignore.
func (s *sse) comment(text string) error {
	return s.write(appendComment(nil, text))
}

// appendItem appends the event of one item to b.
func appendItem(b []byte, it activity.Item, data []byte) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, it.Seq, 10)
	b = append(b, "\nevent: "...)
	b = append(b, it.Type...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

// appendComment appends an SSE comment to b.
func appendComment(b []byte, text string) []byte {
	b = append(b, ": "...)
	b = append(b, text...)
	return append(b, "\n\n"...)
}

func (s *sse) write(b []byte) error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.flush()
}

func (s *sse) flush() error { return s.rc.Flush() }
