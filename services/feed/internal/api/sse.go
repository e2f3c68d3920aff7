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
	buf := make([]byte, 0, len(data)+64)
	buf = append(buf, "id: "...)
	buf = strconv.AppendInt(buf, it.Seq, 10)
	buf = append(buf, "\nevent: "...)
	buf = append(buf, it.Type...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	buf = append(buf, "\n\n"...)
	return s.write(buf)
}

// comment writes an SSE comment, which clients ignore.
func (s *sse) comment(text string) error {
	return s.write([]byte(": " + text + "\n\n"))
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
