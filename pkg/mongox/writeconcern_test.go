package mongox

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// TestWritesWaitForMajorityAndJournal: the services' clients send every
// write with w=majority and j=true, whatever the URI says, so that what
// the log and the offsets rest on survives a failover; and the embedded
// store accepts such writes.
func TestWritesWaitForMajorityAndJournal(t *testing.T) {
	uri := mongotest.URI(t)
	if strings.Contains(uri, "?") {
		uri += "&w=1&journal=false"
	} else {
		uri += "?w=1&journal=false"
	}
	var mu sync.Mutex
	sent := map[string]bson.Raw{}
	opts := clientOptions(uri).SetMonitor(&event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		mu.Lock()
		defer mu.Unlock()
		if wc, err := e.Command.LookupErr("writeConcern"); err == nil {
			sent[e.CommandName] = wc.Document()
		} else if _, seen := sent[e.CommandName]; !seen {
			sent[e.CommandName] = nil
		}
	}})
	cl, err := mongo.Connect(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	coll := cl.Database(mongotest.NewDatabase(t)).Collection("things")
	ctx := context.Background()
	if _, err := coll.InsertMany(ctx, []any{bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "_id", Value: "b"}}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 1}}}}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 2 {
		t.Fatalf("got %d documents (%v), want 2", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, cmd := range []string{"insert", "update"} {
		wc := sent[cmd]
		w, _ := wc.Lookup("w").StringValueOK()
		j, _ := wc.Lookup("j").BooleanOK()
		if wc == nil || w != "majority" || !j {
			t.Errorf("%s sent write concern %v, want {w: majority, j: true}", cmd, wc)
		}
	}
}
