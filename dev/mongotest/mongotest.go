// Package mongotest owns the MongoDB side of tests: one store per test
// binary, started on first use (the embedded FerretDB server, or the real
// server named by RCM_TEST_MONGODB_URI), a fresh database per test, clients
// closed with the test, and private servers that fault tests may stop and
// start again.
//
// A test binary that uses it closes the shared store from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(mongotest.Main(m)) }
package mongotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/embedded"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// EnvURI names the environment variable that points the tests at a real
// MongoDB server instead of the embedded one.
const EnvURI = "RCM_TEST_MONGODB_URI"

// shared is the store of this test binary.
var shared struct {
	once   sync.Once
	mu     sync.Mutex
	uri    string
	mongo  *embedded.Mongo // nil when EnvURI is set
	admin  *mongo.Client   // drops the databases of finished tests
	dir    string
	err    error
	closed bool
}

// runID keeps database names of concurrent test binaries on one real server
// apart.
var runID = func() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

var dbSeq atomic.Int64

func startShared() {
	if uri := os.Getenv(EnvURI); uri != "" {
		shared.uri = uri
	} else {
		dir, err := os.MkdirTemp("", "rcm-mongotest-")
		if err != nil {
			shared.err = err
			return
		}
		m, err := embedded.StartMongo(context.Background(), embedded.MongoConfig{DataDir: filepath.Join(dir, "mongo")})
		if err != nil {
			_ = os.RemoveAll(dir)
			shared.err = err
			return
		}
		shared.mongo, shared.dir, shared.uri = m, dir, m.URI()
	}
	shared.admin, shared.err = connect(shared.uri)
}

func connect(uri string, monitors ...*event.CommandMonitor) (*mongo.Client, error) {
	opts := options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second)
	for _, m := range monitors {
		opts.SetMonitor(m)
	}
	cl, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", uri, err)
	}
	return cl, nil
}

// URI returns the connection string of the test binary's store, starting
// the embedded one on first use.
func URI(t testing.TB) string {
	t.Helper()
	shared.once.Do(startShared)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	switch {
	case shared.err != nil:
		t.Fatalf("mongotest: start store: %v", shared.err)
	case shared.closed:
		t.Fatal("mongotest: store used after Close")
	}
	return shared.uri
}

// Close stops the embedded store, if one was started, and removes its data.
// Main calls it after the tests.
func Close() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.closed {
		return
	}
	shared.closed = true
	if shared.admin != nil {
		_ = shared.admin.Disconnect(context.Background())
	}
	if shared.mongo != nil {
		shared.mongo.Close()
		_ = os.RemoveAll(shared.dir)
	}
}

// Main runs the tests and then closes the shared store; use it as
// os.Exit(mongotest.Main(m)) in TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	Close()
	return code
}

// Client returns a client of the test binary's store, disconnected when the
// test ends.
func Client(t testing.TB) *mongo.Client {
	t.Helper()
	return newClient(t, URI(t))
}

// MonitoredClient is Client with the command monitor m: the tests that
// count the store commands of the code they test use it.
func MonitoredClient(t testing.TB, m *event.CommandMonitor) *mongo.Client {
	t.Helper()
	return newClient(t, URI(t), m)
}

func newClient(t testing.TB, uri string, monitors ...*event.CommandMonitor) *mongo.Client {
	t.Helper()
	cl, err := connect(uri, monitors...)
	if err != nil {
		t.Fatalf("mongotest: %v", err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return cl
}

// NewDatabase returns the name of a database no other test uses, dropped
// when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	URI(t)
	name := databaseName(t.Name())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := shared.admin.Database(name).Drop(ctx); err != nil {
			t.Errorf("mongotest: drop database %s: %v", name, err)
		}
	})
	return name
}

// databaseName turns a test name into a legal, unique database name: at
// most 63 characters of [a-z0-9_], which MongoDB and FerretDB (whose
// database is a file) both accept.
func databaseName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 40 {
		s = s[:40]
	}
	return fmt.Sprintf("t_%s_%s_%d", s, runID, dbSeq.Add(1))
}

// Server is an embedded store of one test, which it may stop and start
// again on the same address and data, as an outage would. It is always
// embedded, also when EnvURI is set: a real server cannot be stopped from
// a test.
type Server struct {
	dir string

	mu   sync.Mutex
	addr string
	m    *embedded.Mongo
}

// Restartable starts a private store, closed when the test ends.
func Restartable(t testing.TB) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), addr: "127.0.0.1:0"}
	if err := s.Start(); err != nil {
		t.Fatalf("mongotest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// URI is the store's connection string; it stays the same across restarts.
func (s *Server) URI() string { return "mongodb://" + s.Addr() + "/" }

// Addr is the store's address, "127.0.0.1:PORT".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Client returns a client of this store, disconnected when the test ends.
func (s *Server) Client(t testing.TB) *mongo.Client {
	t.Helper()
	return newClient(t, s.URI())
}

// Running reports whether the store is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m != nil
}

// Stop stops the store and drops its connections; its data stays. Stopping
// a stopped store does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m != nil {
		s.m.Close()
		s.m = nil
	}
}

// Start starts the store again on its address with its data (the first
// start picks the port). Starting a running store does nothing.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := embedded.StartMongo(ctx, embedded.MongoConfig{Addr: s.addr, DataDir: s.dir})
	if err != nil {
		return fmt.Errorf("start store: %w", err)
	}
	s.m, s.addr = m, m.Addr()
	return nil
}

// Restart stops the store and starts it again.
func (s *Server) Restart() error {
	s.Stop()
	return s.Start()
}
