// Package testenv owns the TestMain of test binaries that need both the
// broker and the store: it runs the tests, then closes whichever of the
// shared servers (see kafkatest and mongotest) the tests started.
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// A binary that needs only one of them uses kafkatest.Main or
// mongotest.Main, and links only that one.
package testenv

import (
	"testing"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
)

// Main runs the tests and then closes the shared broker and store; its
// result is the exit code for os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	kafkatest.Close()
	mongotest.Close()
	return code
}
