package mongotest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestNewDatabaseIsFreshAndUsable(t *testing.T) {
	t.Parallel()
	a, b := NewDatabase(t), NewDatabase(t)
	if a == b {
		t.Fatalf("two databases named %q", a)
	}
	cl := Client(t)
	coll := cl.Database(a).Collection("campaigns")
	if n, err := coll.CountDocuments(t.Context(), bson.D{}); err != nil || n != 0 {
		t.Fatalf("fresh database holds %d documents (err %v), want 0", n, err)
	}
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "rcm_1"}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var got bson.M
	if err := coll.FindOne(t.Context(), bson.D{{Key: "_id", Value: "rcm_1"}}).Decode(&got); err != nil {
		t.Fatalf("find: %v", err)
	}
}

func TestDatabaseIsDroppedWithItsTest(t *testing.T) {
	var name string
	t.Run("owner", func(t *testing.T) {
		name = NewDatabase(t)
		if _, err := Client(t).Database(name).Collection("c").InsertOne(t.Context(), bson.D{{Key: "x", Value: 1}}); err != nil {
			t.Fatalf("insert: %v", err)
		}
	})
	names, err := Client(t).ListDatabaseNames(t.Context(), bson.D{})
	if err != nil {
		t.Fatalf("list databases: %v", err)
	}
	if slices.Contains(names, name) {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

func TestSharedStoreIsStartedOnce(t *testing.T) {
	t.Parallel()
	a, b := URI(t), URI(t)
	if a == "" || a != b {
		t.Fatalf("URI() = %q then %q, want the same non-empty URI", a, b)
	}
	if os.Getenv(EnvURI) == "" && shared.mongo == nil {
		t.Fatal("no embedded store, and no real one configured")
	}
}

// A fault test stops its own store; its clients fail fast while it is down
// and carry on, with the data, once it is back.
func TestRestartableServer(t *testing.T) {
	t.Parallel()
	s := Restartable(t)
	if s.URI() == URI(t) {
		t.Fatalf("Restartable returned the shared store %s", s.URI())
	}
	uri := s.URI()
	coll := s.Client(t).Database("faults").Collection("docs")
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "before"}}); err != nil {
		t.Fatalf("insert: %v", err)
	}

	s.Stop()
	s.Stop() // twice is harmless
	if s.Running() {
		t.Fatal("Running() after Stop = true")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "lost"}}); err == nil {
		t.Fatal("insert while the store is down: got no error, want one")
	}

	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if s.URI() != uri {
		t.Fatalf("URI() after restart = %s, want %s", s.URI(), uri)
	}
	eventually(t, "insert after restart", func() error {
		_, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "after"}})
		return err
	})
	if err := s.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	var ids []string
	eventually(t, "find after restart", func() error {
		cur, err := coll.Find(t.Context(), bson.D{})
		if err != nil {
			return err
		}
		var docs []struct {
			ID string `bson:"_id"`
		}
		if err := cur.All(t.Context(), &docs); err != nil {
			return err
		}
		ids = ids[:0]
		for _, d := range docs {
			ids = append(ids, d.ID)
		}
		return nil
	})
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"after", "before"}) {
		t.Fatalf("documents after restarts = %v, want after and before", ids)
	}
}

// eventually retries op until it succeeds or 10s have passed.
func eventually(t *testing.T, what string, op func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := op()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		<-tick.C
	}
}

func TestDatabaseName(t *testing.T) {
	legal := regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	tests := []struct{ name, test string }{
		{"plain", "TestX"},
		{"subtest with punctuation", "TestX/a.b c$d"},
		{"long", fmt.Sprintf("Test%0300d", 7)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := databaseName(tc.test); !legal.MatchString(got) {
				t.Fatalf("databaseName(%q) = %q, want match of %s", tc.test, got, legal)
			}
		})
	}
}
