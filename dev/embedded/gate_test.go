package embedded

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestWriteGateFirstInFirstOut: the writes of one database are let in one
// at a time, in the order they came; another database's are not held up.
func TestWriteGateFirstInFirstOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g writeGates
		leave := g.enter("db")
		var mu sync.Mutex
		var order []int
		const waiting = 5
		for i := range waiting {
			go func() {
				leave := g.enter("db")
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				leave()
			}()
			synctest.Wait() // i waits at the gate before i+1 comes
		}
		g.enter("other")() // not held up by db's queue
		mu.Lock()
		if len(order) != 0 {
			t.Fatalf("%v went in while the gate was held", order)
		}
		mu.Unlock()
		leave()
		synctest.Wait()
		if want := []int{0, 1, 2, 3, 4}; !slices.Equal(order, want) {
			t.Fatalf("went in in the order %v, want %v", order, want)
		}
	})
}

// TestFrontGatesEveryWrite: every write through the front waits for its
// database's turn, inserts and writes filtered on anything but _id too;
// reads do not.
func TestFrontGatesEveryWrite(t *testing.T) {
	m := startMongo(t, MongoConfig{})
	ctx := t.Context()
	coll := connect(t, m.URI()).Database("gate").Collection("docs")
	gated := func() int64 { return m.front.gated.Load() }
	before := gated()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "a"}, {Key: "n", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 2}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.UpdateMany(ctx, bson.D{{Key: "n", Value: 2}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: 3}}}}); err != nil {
		t.Fatal(err)
	}
	if got := gated() - before; got != 3 {
		t.Fatalf("%d of 3 writes went through the gate", got)
	}
	var doc struct {
		N int `bson:"n"`
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "a"}}).Decode(&doc); err != nil || doc.N != 3 {
		t.Fatalf("read back n = %d (%v), want 3", doc.N, err)
	}
	if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	if got := gated() - before; got != 4 {
		t.Fatalf("after a read and a delete, %d writes went through the gate, want 4", got)
	}
}
