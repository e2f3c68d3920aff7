package events

import (
	"testing"

	"github.com/rcm-platform/rcm/dev/importstest"
)

// TestImportsNoTransport keeps the event types free of the Kafka client
// (package kafkarec holds the record codec) and of any other I/O client, so
// that the domain packages may use them.
func TestImportsNoTransport(t *testing.T) { importstest.NoTransport(t) }
