package mongox_test

import (
	"context"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/mongox"
)

func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }

func TestIsFerretDB(t *testing.T) {
	cl, disconnect, err := mongox.Dial(mongotest.URI(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer disconnect()
	got, err := mongox.IsFerretDB(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	// The embedded store is FerretDB; a real MongoDB given through
	// RCM_TEST_MONGODB_URI is not.
	want := os.Getenv(mongotest.EnvURI) == ""
	if got != want {
		t.Fatalf("got IsFerretDB %v, want %v", got, want)
	}
}
