package bench

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"time"
)

// newStreamClient is an HTTP client for long-lived streams: no overall
// timeout, any number of connections per host.
func newStreamClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConnsPerHost = 16
	t.DisableCompression = true
	t.ResponseHeaderTimeout = 60 * time.Second
	return &http.Client{Transport: t}
}

// readSSE reads Server-Sent Events from r until it ends, handing the data
// of each event to fn. Comments (heartbeats) are skipped.
func readSSE(r io.Reader, fn func(data []byte)) error {
	br := bufio.NewReaderSize(r, 2048)
	var data []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				// A line longer than the buffer: keep it whole.
				head := append([]byte(nil), line...)
				rest, err2 := br.ReadBytes('\n')
				line, err = append(head, rest...), err2
			}
			if err != nil {
				return err
			}
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				fn(data)
				data = data[:0]
			}
		case bytes.HasPrefix(line, []byte("data:")):
			d := bytes.TrimPrefix(line[len("data:"):], []byte(" "))
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, d...)
		}
	}
}
