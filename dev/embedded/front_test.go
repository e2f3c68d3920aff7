package embedded

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestFrontSerializesIncrementsOfOneDocument: FerretDB reads, changes and
// writes a document in separate steps, so concurrent $inc from several
// connections lose increments; through the front they are applied one
// after the other.
func TestFrontSerializesIncrementsOfOneDocument(t *testing.T) {
	const goroutines, each = 8, 50
	m := startMongo(t, MongoConfig{})
	clients := []*mongo.Client{connect(t, m.URI()), connect(t, m.URI())}
	ctx := t.Context()
	db := "front"
	if _, err := clients[0].Database(db).Collection("counters").InsertOne(ctx, bson.D{{Key: "_id", Value: "c"}, {Key: "n", Value: 0}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		coll := clients[g%len(clients)].Database(db).Collection("counters")
		wg.Go(func() {
			for range each {
				if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "c"}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("update: %v", err)
	}
	var got struct {
		N int `bson:"n"`
	}
	if err := clients[0].Database(db).Collection("counters").FindOne(ctx, bson.D{{Key: "_id", Value: "c"}}).Decode(&got); err != nil {
		t.Fatalf("find: %v", err)
	}
	t.Logf("%d goroutines x %d $inc on one document: n = %d", goroutines, each, got.N)
	if got.N != goroutines*each {
		t.Fatalf("n = %d after %d goroutines x %d $inc, want %d", got.N, goroutines, each, goroutines*each)
	}
}

// TestFrontRevisionCheckLosesNoOptOut runs the campaign service's write
// path from two clients, as two replicas would: read the document, append
// an opt-out and bump the revision with an update filtered on {_id,
// revision}, and read again and retry when another writer got there first.
// Every opt-out must be there at the end.
func TestFrontRevisionCheckLosesNoOptOut(t *testing.T) {
	const writers = 24
	m := startMongo(t, MongoConfig{})
	clients := []*mongo.Client{connect(t, m.URI()), connect(t, m.URI())}
	ctx := t.Context()
	colls := []*mongo.Collection{
		clients[0].Database("front").Collection("campaigns"),
		clients[1].Database("front").Collection("campaigns"),
	}
	if _, err := colls[0].InsertOne(ctx, bson.D{{Key: "_id", Value: "rcm_1"}, {Key: "revision", Value: int64(0)}, {Key: "optOuts", Value: bson.A{}}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	type campaign struct {
		Revision int64    `bson:"revision"`
		OptOuts  []string `bson:"optOuts"`
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	retries := 0
	errs := make(chan error, writers)
	for w := range writers {
		coll := colls[w%2]
		wg.Go(func() {
			optOut := fmt.Sprintf("opt_%02d", w)
			for attempt := 0; ; attempt++ {
				if attempt == 100 {
					errs <- fmt.Errorf("%s: no success in %d attempts", optOut, attempt)
					return
				}
				var c campaign
				if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "rcm_1"}}).Decode(&c); err != nil {
					errs <- err
					return
				}
				res, err := coll.UpdateOne(ctx,
					bson.D{{Key: "_id", Value: "rcm_1"}, {Key: "revision", Value: c.Revision}},
					bson.D{{Key: "$set", Value: bson.D{
						{Key: "optOuts", Value: append(c.OptOuts, optOut)},
						{Key: "revision", Value: c.Revision + 1},
					}}})
				if err != nil {
					errs <- err
					return
				}
				if res.MatchedCount == 1 {
					return
				}
				mu.Lock()
				retries++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	var c campaign
	if err := colls[0].FindOne(ctx, bson.D{{Key: "_id", Value: "rcm_1"}}).Decode(&c); err != nil {
		t.Fatalf("find: %v", err)
	}
	lost := 0
	for w := range writers {
		if !slices.Contains(c.OptOuts, fmt.Sprintf("opt_%02d", w)) {
			lost++
		}
	}
	t.Logf("%d writers on two clients: %d retries, revision %d, %d opt-outs stored, %d lost", writers, retries, c.Revision, len(c.OptOuts), lost)
	if lost != 0 || len(c.OptOuts) != writers || c.Revision != writers {
		t.Fatalf("after %d opt-outs: %d lost, %d stored, revision %d; want none lost, %d stored, revision %d",
			writers, lost, len(c.OptOuts), c.Revision, writers, writers)
	}
}

// TestFrontAnswersAFailedCheckAsTheServer: the updates and deletes the
// front answers itself (their condition besides _id does not hold) get the
// reply FerretDB gives, and the ones it forwards do what they say.
func TestFrontAnswersAFailedCheckAsTheServer(t *testing.T) {
	m := startMongo(t, MongoConfig{})
	front := connect(t, m.URI())
	direct := connect(t, "mongodb://"+m.front.backend+"/")
	ctx := t.Context()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seed := bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(3)}, {Key: "updatedAt", Value: at}, {Key: "tags", Value: bson.A{"a", "b"}}, {Key: "v", Value: "x"}}
	// Each its own collection of the same server.
	viaFront := front.Database("front").Collection("cas_front")
	viaDirect := direct.Database("front").Collection("cas_direct")
	for _, coll := range []*mongo.Collection{viaFront, viaDirect} {
		if _, err := coll.InsertOne(ctx, seed); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}
	type outcome struct {
		Matched, Modified, Upserted, Deleted int64
		Err                                  string
	}
	update := func(coll *mongo.Collection, filter, upd bson.D, upsert bool) outcome {
		res, err := coll.UpdateOne(ctx, filter, upd, options.UpdateOne().SetUpsert(upsert))
		if err != nil {
			return outcome{Err: errText(err)}
		}
		o := outcome{Matched: res.MatchedCount, Modified: res.ModifiedCount}
		if res.UpsertedID != nil {
			o.Upserted = 1
		}
		return o
	}
	replace := func(coll *mongo.Collection, filter, doc bson.D) outcome {
		res, err := coll.ReplaceOne(ctx, filter, doc)
		if err != nil {
			return outcome{Err: errText(err)}
		}
		return outcome{Matched: res.MatchedCount, Modified: res.ModifiedCount}
	}
	del := func(coll *mongo.Collection, filter bson.D) outcome {
		res, err := coll.DeleteOne(ctx, filter)
		if err != nil {
			return outcome{Err: errText(err)}
		}
		return outcome{Deleted: res.DeletedCount}
	}
	set := bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: "y"}}}}
	// How the front handles each: answers it, reduces its filter to _id,
	// or forwards it unchanged (serialized all the same).
	const answered, reduced, forwarded = "answered", "reduced", "forwarded"
	cases := []struct {
		name, via string
		op        func(coll *mongo.Collection) outcome
	}{
		{"stale revision", answered, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(2)}}, set, false)
		}},
		{"revision of another number type", reduced, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int32(3)}}, set, false)
		}},
		{"missing field", answered, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "nope", Value: 1}}, set, false)
		}},
		{"string against number", answered, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: "3"}}, set, false)
		}},
		{"array element", forwarded, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "tags", Value: "b"}}, set, false)
		}},
		{"no such document", answered, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "none"}, {Key: "revision", Value: int64(3)}}, set, false)
		}},
		{"upsert, condition fails", forwarded, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(9)}}, set, true)
		}},
		{"stale replace", answered, func(coll *mongo.Collection) outcome {
			return replace(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "updatedAt", Value: at.Add(time.Second)}}, bson.D{{Key: "v", Value: "z"}})
		}},
		{"stale delete", answered, func(coll *mongo.Collection) outcome {
			return del(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "updatedAt", Value: at.Add(-time.Second)}})
		}},
		{"revision holds", reduced, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(3)}, {Key: "v", Value: "y"}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: "w"}}}}, false)
		}},
		{"replace holds", reduced, func(coll *mongo.Collection) outcome {
			return replace(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "updatedAt", Value: at}, {Key: "v", Value: "w"}},
				bson.D{{Key: "revision", Value: int64(4)}, {Key: "v", Value: "z"}})
		}},
		{"delete holds", reduced, func(coll *mongo.Collection) outcome {
			return del(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(4)}})
		}},
	}
	p := m.front
	for _, c := range cases {
		want := c.op(viaDirect)
		s, a, r := p.serialized.Load(), p.answered.Load(), p.reduced.Load()
		got := c.op(viaFront)
		if got != want {
			t.Errorf("%s: through the front %+v, FerretDB itself %+v", c.name, got, want)
		}
		via := forwarded
		switch {
		case p.serialized.Load() != s+1:
			via = "not serialized"
		case p.answered.Load() != a:
			via = answered
		case p.reduced.Load() != r:
			via = reduced
		}
		if via != c.via {
			t.Errorf("%s: the front %s it, want %s", c.name, via, c.via)
		}
	}
	for _, coll := range []*mongo.Collection{viaFront, viaDirect} {
		if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
			t.Fatalf("documents left = %d, %v; want 0 (the last delete held)", n, err)
		}
	}
}

// errText is an error's code and message, comparable between servers.
func errText(err error) string {
	var we mongo.WriteException
	if errors.As(err, &we) && len(we.WriteErrors) > 0 {
		return fmt.Sprintf("write error %d", we.WriteErrors[0].Code)
	}
	var ce mongo.CommandError
	if errors.As(err, &ce) {
		return fmt.Sprintf("command error %d", ce.Code)
	}
	return err.Error()
}
