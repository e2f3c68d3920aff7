package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// MongoConfig says where and how to run the embedded MongoDB server.
type MongoConfig struct {
	// Addr is the TCP address to listen on; "127.0.0.1:0" (or "") picks a
	// free port.
	Addr string
	// DataDir holds one SQLite file per database. It is required: FerretDB's
	// in-memory SQLite mode hangs on updates.
	DataDir string
	// Logger receives FerretDB's warnings and errors; nil discards them.
	// Its info level logs every connection, so it is never forwarded.
	Logger *slog.Logger

	// indexEvery is how often the _id expression indexes are checked;
	// 0 means every second, negative never (tests measure the scan).
	indexEvery time.Duration
}

// Mongo is a running FerretDB server.
type Mongo struct {
	front *proxy
	uri   string
	addr  string
	dir   string
	log   *slog.Logger

	stopRun   context.CancelFunc
	stopLoop  context.CancelFunc
	served    chan struct{} // closed when FerretDB's Run returned
	indexDone chan struct{} // closed when the index loop returned
	// indexPasses counts the index loop's passes, so tests can wait for
	// the next one instead of sleeping.
	indexPasses atomic.Int64
	once        sync.Once
}

// errClosed is returned by operations on a closed server.
var errClosed = errors.New("server closed")

// ferretNew serializes FerretDB constructors: ferretdb.New writes a package
// global (the version's package name).
var ferretNew sync.Mutex

// StartMongo starts FerretDB on cfg.Addr with its SQLite backend under
// cfg.DataDir, creates the _id expression indexes that FerretDB lacks (see
// EnsureIDIndexes) and keeps creating them, every second, for collections
// made later. ctx bounds only the start; the server runs until Close.
func StartMongo(ctx context.Context, cfg MongoConfig) (*Mongo, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("start mongo: a data directory is required")
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("start mongo: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start mongo: %w", err)
	}
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	// Clients connect to our listener, which forwards to FerretDB's own on
	// a private port (see proxy).
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("start mongo: %w", err)
	}
	logger := slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		logger = slog.New(minLevel{Handler: cfg.Logger.Handler(), min: slog.LevelWarn})
	}

	ferretNew.Lock()
	fdb, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:    logger.With(slog.String("component", "ferretdb")),
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
	})
	ferretNew.Unlock()
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("start mongo on %s: %w", addr, err)
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	loopCtx, stopLoop := context.WithCancel(context.Background())
	m := &Mongo{
		dir:       dir,
		log:       logger,
		stopRun:   stopRun,
		stopLoop:  stopLoop,
		served:    make(chan struct{}),
		indexDone: make(chan struct{}),
	}
	go func() {
		defer close(m.served)
		_ = fdb.Run(runCtx)
	}()
	// FerretDB's listener is bound by New, so its address is known at once.
	backend := listenAddr(fdb.MongoDBURI())
	m.front = newProxy(ln, backend)
	m.addr = ln.Addr().String()
	m.uri = "mongodb://" + m.addr + "/"

	every := cfg.indexEvery
	if every == 0 {
		every = time.Second
	}
	go m.indexLoop(loopCtx, every, backend)
	if err := m.EnsureIDIndexes(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// listenAddr extracts host:port from FerretDB's "mongodb://host:port/".
func listenAddr(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return ""
	}
	return u.Host
}

// URI is the connection string, "mongodb://127.0.0.1:PORT/".
func (m *Mongo) URI() string { return m.uri }

// Addr is the listening address, "127.0.0.1:PORT": start again on it to
// restart the server where clients expect it.
func (m *Mongo) Addr() string { return m.addr }

// DataDir is the absolute data directory.
func (m *Mongo) DataDir() string { return m.dir }

// Close drops every client connection, as a crashed server would, stops
// the server and waits until its SQLite files are closed, so that a new
// server may open the same directory at once. It is safe to call more than
// once.
func (m *Mongo) Close() {
	m.once.Do(func() {
		m.front.Close()
		// The loop's own client must be gone before FerretDB stops, or
		// FerretDB would wait for it.
		m.stopLoop()
		<-m.indexDone
		m.stopRun()
		<-m.served
	})
}

// EnsureIDIndexes creates, in every database of the data directory, the
// SQLite expression index on _id that FerretDB's lookups by _id can use.
//
// FerretDB pushes a filter {_id: <string or ObjectID>} down to SQLite as
// WHERE _ferretdb_sjson->'$._id' = ? (finds, updates and deletes alike), but
// the unique index it creates for _id is on _ferretdb_sjson->"_id", another
// expression, so SQLite scans the whole table for every lookup. The index
// created here is invisible to listIndexes and dropped with its collection.
func (m *Mongo) EnsureIDIndexes(ctx context.Context) error {
	select {
	case <-m.served:
		return errClosed
	default:
	}
	if err := ensureIDIndexes(ctx, m.dir); err != nil {
		return fmt.Errorf("mongo _id indexes: %w", err)
	}
	return nil
}

// indexLoop gives the collections created while the server runs their _id
// index. Rather than open every SQLite file every second, it asks FerretDB
// (over the wire, on its private address) which collections exist and opens
// a file only when a collection has appeared in it. Every open of a file
// FerretDB may be dropping at that moment is a small risk: SQLite removes a
// WAL file only when its last connection closes, and a WAL left beside a
// recreated database of the same name would be replayed into it.
func (m *Mongo) indexLoop(ctx context.Context, every time.Duration, backend string) {
	defer close(m.indexDone)
	if every < 0 {
		return
	}
	cl, err := mongo.Connect(options.Client().ApplyURI("mongodb://" + backend + "/").
		SetServerSelectionTimeout(5 * time.Second).SetMaxPoolSize(2))
	if err != nil {
		m.log.Warn("create _id indexes: connect", slog.String("err", err.Error()))
		return
	}
	defer func() { _ = cl.Disconnect(context.Background()) }()

	indexed := map[collectionKey]bool{}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := m.indexNewCollections(ctx, cl, indexed); err != nil && ctx.Err() == nil {
			m.log.Warn("create _id indexes", slog.String("err", err.Error()))
		}
		m.indexPasses.Add(1)
	}
}

// collectionKey names one incarnation of a collection: a collection dropped
// and created again under the same name has a new UUID and a new table.
type collectionKey struct{ db, name, uuid string }

// indexNewCollections indexes the databases holding a collection missing
// from indexed, and forgets the collections that are gone.
func (m *Mongo) indexNewCollections(ctx context.Context, cl *mongo.Client, indexed map[collectionKey]bool) error {
	// Database names from the file names: listDatabases would make FerretDB
	// read every page of every database for its sizes.
	files, err := filepath.Glob(filepath.Join(m.dir, "*"+sqliteExt))
	if err != nil {
		return err
	}
	present := map[collectionKey]bool{}
	var errs []error
	for _, f := range files {
		db := strings.TrimSuffix(filepath.Base(f), sqliteExt)
		cur, err := cl.Database(db).ListCollections(ctx, bson.D{})
		if err != nil {
			errs = append(errs, fmt.Errorf("list collections of %s: %w", db, err))
			continue
		}
		var specs []struct {
			Name string `bson:"name"`
			Info struct {
				UUID bson.Binary `bson:"uuid"`
			} `bson:"info"`
		}
		if err := cur.All(ctx, &specs); err != nil {
			errs = append(errs, fmt.Errorf("list collections of %s: %w", db, err))
			continue
		}
		var fresh []collectionKey
		for _, s := range specs {
			k := collectionKey{db, s.Name, string(s.Info.UUID.Data)}
			present[k] = true
			if !indexed[k] {
				fresh = append(fresh, k)
			}
		}
		if len(fresh) == 0 {
			continue
		}
		if err := ensureFileIDIndexes(ctx, f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(f), err))
			continue
		}
		for _, k := range fresh {
			indexed[k] = true
		}
	}
	for k := range indexed {
		if !present[k] {
			delete(indexed, k)
		}
	}
	return errors.Join(errs...)
}

// minLevel drops records below min before they reach the wrapped handler.
// The attributes and groups it is given reach the wrapped handler only
// with a record that gets through: FerretDB derives a logger with
// attributes for every connection and command, and a handler formats
// attributes as it gets them, which cost the store ~2% of its CPU for
// records that were all dropped.
type minLevel struct {
	slog.Handler
	min  slog.Level
	with []func(slog.Handler) slog.Handler // applied in order
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) Handle(ctx context.Context, r slog.Record) error {
	inner := h.Handler
	for _, f := range h.with {
		inner = f(inner)
	}
	return inner.Handle(ctx, r)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.and(func(x slog.Handler) slog.Handler { return x.WithAttrs(attrs) })
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return h.and(func(x slog.Handler) slog.Handler { return x.WithGroup(name) })
}

func (h minLevel) and(f func(slog.Handler) slog.Handler) slog.Handler {
	return minLevel{h.Handler, h.min, append(slices.Clip(h.with), f)}
}
