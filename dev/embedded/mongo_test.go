package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// startMongo starts a server on a fresh data directory, closed at the end
// of the test.
func startMongo(t testing.TB, cfg MongoConfig) *Mongo {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	m, err := StartMongo(t.Context(), cfg)
	if err != nil {
		t.Fatalf("StartMongo: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// connect returns a driver client of uri, disconnected at the end of the
// test.
func connect(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	cl, err := mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(5 * time.Second).SetTimeout(30 * time.Second))
	if err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	return cl
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestMongoRequiresDataDir(t *testing.T) {
	if _, err := StartMongo(t.Context(), MongoConfig{Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("StartMongo without a data directory: got no error, want one")
	}
}

func TestMongoPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	m := startMongo(t, MongoConfig{Addr: "127.0.0.1:0", DataDir: dir})
	addr, uri := m.Addr(), m.URI()
	if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("Addr() = %q, want 127.0.0.1:<port>", addr)
	}
	if want := "mongodb://" + addr + "/"; uri != want {
		t.Fatalf("URI() = %q, want %q", uri, want)
	}

	cl := connect(t, uri)
	coll := cl.Database("restart").Collection("docs")
	ctx := t.Context()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "doc_1"}, {Key: "n", Value: 1}}); err != nil {
		t.Fatalf("insert: %v", err)
	}

	m.Close()
	m.Close() // twice is harmless
	downCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := coll.FindOne(downCtx, bson.D{{Key: "_id", Value: "doc_1"}}).Err(); err == nil {
		t.Fatal("find while the server is down: got no error, want one")
	}

	m2 := startMongo(t, MongoConfig{Addr: addr, DataDir: dir})
	if m2.URI() != uri {
		t.Fatalf("restarted URI() = %q, want %q", m2.URI(), uri)
	}
	// The same client reconnects on its own.
	eventually(t, 10*time.Second, "find after restart", func() error {
		var got struct {
			N int `bson:"n"`
		}
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "doc_1"}}).Decode(&got); err != nil {
			return err
		}
		if got.N != 1 {
			return fmt.Errorf("got n=%d, want 1", got.N)
		}
		return nil
	})
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "doc_1"}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}); err != nil {
		t.Fatalf("update after restart: %v", err)
	}
}

// idIndexes lists, per collection table of the database file, whether our
// _id index exists.
func idIndexes(t testing.TB, dir, dbName string) map[string]bool {
	t.Helper()
	db, err := openSQLite(filepath.Join(dir, dbName+sqliteExt), "ro")
	if err != nil {
		t.Fatalf("open %s: %v", dbName, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), `
		SELECT c.table_name, EXISTS (SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = c.table_name || '_rcm_id')
		FROM _ferretdb_collections c`)
	if err != nil {
		t.Fatalf("list tables of %s: %v", dbName, err)
	}
	defer rows.Close()
	got := map[string]bool{}
	for rows.Next() {
		var table string
		var ok bool
		if err := rows.Scan(&table, &ok); err != nil {
			t.Fatal(err)
		}
		got[table] = ok
	}
	return got
}

func TestEnsureIDIndexesMakesLookupsUseAnIndex(t *testing.T) {
	m := startMongo(t, MongoConfig{indexEvery: -1})
	cl := connect(t, m.URI())
	ctx := t.Context()
	coll := cl.Database("plans").Collection("campaigns")
	docs := make([]any, 200)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: fmt.Sprintf("rcm_%04d", i)}, {Key: "accountId", Value: "org_1"}}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatalf("insert: %v", err)
	}

	tables := idIndexes(t, m.DataDir(), "plans")
	if len(tables) != 1 {
		t.Fatalf("collection tables = %v, want one", tables)
	}
	var table string
	for tb, ok := range tables {
		table = tb
		if ok {
			t.Fatalf("index on %s exists before EnsureIDIndexes", tb)
		}
	}
	plan := func() string {
		db, err := openSQLite(filepath.Join(m.DataDir(), "plans"+sqliteExt), "ro")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// The statement FerretDB runs for find/update/delete by _id.
		return queryPlan(t, db, fmt.Sprintf(`SELECT _ferretdb_sjson FROM %s WHERE %s = ?`, quoteIdent(table), idExpr), `"rcm_0007"`)
	}
	if p := plan(); !strings.Contains(p, "SCAN") {
		t.Fatalf("plan before the index = %q, want a full SCAN (FerretDB's own _id index does not match)", p)
	}

	if err := m.EnsureIDIndexes(ctx); err != nil {
		t.Fatalf("EnsureIDIndexes: %v", err)
	}
	want := "USING INDEX " + table + "_rcm_id"
	if p := plan(); !strings.Contains(p, want) {
		t.Fatalf("plan after the index = %q, want %q", p, want)
	}
	// FerretDB's explain shows the plan of the statement it really runs.
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "rcm_0007"}}).Err(); err != nil {
		t.Fatalf("find: %v", err)
	}
	var explain bson.M
	err := cl.Database("plans").RunCommand(ctx, bson.D{
		{Key: "explain", Value: bson.D{{Key: "find", Value: "campaigns"}, {Key: "filter", Value: bson.D{{Key: "_id", Value: "rcm_0007"}}}}},
	}).Decode(&explain)
	if err != nil {
		t.Fatalf("explain: %v", err)
	}
	if s := fmt.Sprint(explain["queryPlanner"]); !strings.Contains(s, want) {
		t.Fatalf("FerretDB explain = %v, want it to mention %q", explain, want)
	}
	// Idempotent, and invisible to the driver.
	if err := m.EnsureIDIndexes(ctx); err != nil {
		t.Fatalf("EnsureIDIndexes again: %v", err)
	}
	specs, err := coll.Indexes().ListSpecifications(ctx)
	if err != nil {
		t.Fatalf("list indexes: %v", err)
	}
	if len(specs) != 1 || specs[0].Name != "_id_" {
		t.Fatalf("listIndexes = %v, want only _id_", specs)
	}
	var got bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "rcm_0007"}}).Decode(&got); err != nil || got["_id"] != "rcm_0007" {
		t.Fatalf("find by _id = %v, %v; want rcm_0007", got, err)
	}
}

func queryPlan(t testing.TB, db *sql.DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatalf("explain %s: %v", q, err)
	}
	defer rows.Close()
	var details []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		details = append(details, detail)
	}
	return strings.Join(details, "; ")
}

func TestMongoIndexesNewCollectionsWhileRunning(t *testing.T) {
	m := startMongo(t, MongoConfig{indexEvery: 20 * time.Millisecond})
	cl := connect(t, m.URI())
	ctx := t.Context()
	for _, name := range []string{"a", "b"} {
		if _, err := cl.Database("later").Collection(name).InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}}); err != nil {
			t.Fatalf("insert into %s: %v", name, err)
		}
	}
	allIndexed := func() error {
		got := idIndexes(t, m.DataDir(), "later")
		if len(got) != 2 {
			return fmt.Errorf("tables %v, want 2", got)
		}
		for table, ok := range got {
			if !ok {
				return fmt.Errorf("no index on %s yet", table)
			}
		}
		return nil
	}
	eventually(t, 10*time.Second, "indexes on new collections", allIndexed)

	// A collection dropped and created again (same name, same table name,
	// but its index went with the old table) is indexed again.
	if err := cl.Database("later").Collection("a").Drop(ctx); err != nil {
		t.Fatalf("drop collection: %v", err)
	}
	if _, err := cl.Database("later").Collection("a").InsertOne(ctx, bson.D{{Key: "_id", Value: "y"}}); err != nil {
		t.Fatalf("insert into recreated collection: %v", err)
	}
	eventually(t, 10*time.Second, "index on the recreated collection", allIndexed)

	// A dropped database is not resurrected by the index loop.
	if err := cl.Database("later").Drop(ctx); err != nil {
		t.Fatalf("drop: %v", err)
	}
	after := m.indexPasses.Load() + 3
	eventually(t, 10*time.Second, "three more index passes", func() error {
		if n := m.indexPasses.Load(); n < after {
			return fmt.Errorf("at pass %d", n)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(m.DataDir(), "later"+sqliteExt)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("database file after drop: stat error %v, want not exist", err)
	}
	names, err := cl.ListDatabaseNames(ctx, bson.D{})
	if err != nil {
		t.Fatalf("list databases: %v", err)
	}
	for _, n := range names {
		if n == "later" {
			t.Fatalf("databases after drop = %v, want no %q", names, "later")
		}
	}
}

func TestMongoAddressInUse(t *testing.T) {
	m := startMongo(t, MongoConfig{})
	if m2, err := StartMongo(t.Context(), MongoConfig{Addr: m.Addr(), DataDir: t.TempDir()}); err == nil {
		m2.Close()
		t.Fatalf("second server on %s: got no error, want address in use", m.Addr())
	}
}
