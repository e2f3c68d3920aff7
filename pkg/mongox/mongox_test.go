package mongox_test

import (
	"os"
	"testing"

	"github.com/rcm-platform/rcm/dev/mongotest"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }
