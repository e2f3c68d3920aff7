package contact

import (
	"testing"

	"github.com/rcm-platform/rcm/dev/importstest"
)

// TestImportsNoTransport keeps the rules free of I/O: no HTTP, Kafka or
// MongoDB client code, however indirectly.
func TestImportsNoTransport(t *testing.T) { importstest.NoTransport(t) }
