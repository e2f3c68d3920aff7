package embedded

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
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
	findAndModify := func(coll *mongo.Collection, filter bson.D, remove bool) outcome {
		var res *mongo.SingleResult
		if remove {
			res = coll.FindOneAndDelete(ctx, filter)
		} else {
			res = coll.FindOneAndUpdate(ctx, filter, bson.D{{Key: "$inc", Value: bson.D{{Key: "revision", Value: 1}}}})
		}
		if err := res.Err(); errors.Is(err, mongo.ErrNoDocuments) {
			return outcome{}
		} else if err != nil {
			return outcome{Err: errText(err)}
		}
		return outcome{Matched: 1}
	}
	// The updates array in the body rather than in a document sequence.
	inBody := func(coll *mongo.Collection, filter bson.D) outcome {
		var res struct {
			N         int64 `bson:"n"`
			NModified int64 `bson:"nModified"`
		}
		err := coll.Database().RunCommand(ctx, bson.D{{Key: "update", Value: coll.Name()}, {Key: "updates", Value: bson.A{
			bson.D{{Key: "q", Value: filter}, {Key: "u", Value: bson.D{{Key: "$set", Value: bson.D{{Key: "body", Value: true}}}}}},
		}}}).Decode(&res)
		if err != nil {
			return outcome{Err: errText(err)}
		}
		return outcome{Matched: res.N, Modified: res.NModified}
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
		{"findAndModify, stale", answered, func(coll *mongo.Collection) outcome {
			return findAndModify(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(1)}}, false)
		}},
		{"findAndModify remove, stale", answered, func(coll *mongo.Collection) outcome {
			return findAndModify(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(1)}}, true)
		}},
		{"update in the body, stale", answered, func(coll *mongo.Collection) outcome {
			return inBody(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(1)}})
		}},
		{"update in the body, holds", reduced, func(coll *mongo.Collection) outcome {
			return inBody(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(3)}})
		}},
		{"findAndModify, holds", reduced, func(coll *mongo.Collection) outcome {
			return findAndModify(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(3)}}, false)
		}},
		{"stale replace", answered, func(coll *mongo.Collection) outcome {
			return replace(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "updatedAt", Value: at.Add(time.Second)}}, bson.D{{Key: "v", Value: "z"}})
		}},
		{"stale delete", answered, func(coll *mongo.Collection) outcome {
			return del(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "updatedAt", Value: at.Add(-time.Second)}})
		}},
		{"revision holds", reduced, func(coll *mongo.Collection) outcome {
			return update(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(4)}, {Key: "v", Value: "y"}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "v", Value: "w"}}}}, false)
		}},
		{"replace holds", reduced, func(coll *mongo.Collection) outcome {
			return replace(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "updatedAt", Value: at}, {Key: "v", Value: "w"}},
				bson.D{{Key: "revision", Value: int64(5)}, {Key: "v", Value: "z"}})
		}},
		{"delete holds", reduced, func(coll *mongo.Collection) outcome {
			return del(coll, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(5)}})
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

// TestFrontForwardsWhatItDoesNotRead sends, over a raw connection, the
// messages the front must pass on untouched: a checksummed OP_MSG (the
// checksum covers the header, so no byte may change), and, after a
// moreToCome message, a write it would otherwise answer itself.
func TestFrontForwardsWhatItDoesNotRead(t *testing.T) {
	m := startMongo(t, MongoConfig{})
	cl := connect(t, m.URI())
	ctx := t.Context()
	if _, err := cl.Database("front").Collection("raw").InsertOne(ctx, bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: int64(1)}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	conn, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	update := func(id int32, flags uint32, revision int64) []byte {
		body, err := bson.Marshal(bson.D{
			{Key: "update", Value: "raw"},
			{Key: "updates", Value: bson.A{bson.D{
				{Key: "q", Value: bson.D{{Key: "_id", Value: "k"}, {Key: "revision", Value: revision}}},
				{Key: "u", Value: bson.D{{Key: "$set", Value: bson.D{{Key: "revision", Value: revision + 1}}}}},
			}}},
			{Key: "$db", Value: "front"},
		})
		if err != nil {
			t.Fatal(err)
		}
		msg := (&opMessage{requestID: id, body: body}).encode(0)
		binary.LittleEndian.PutUint32(msg[headerLen:], flags)
		if flags&flagChecksum != 0 {
			msg = binary.LittleEndian.AppendUint32(msg, 0)
			binary.LittleEndian.PutUint32(msg, uint32(len(msg)))
			sum := crc32.Checksum(msg[:len(msg)-4], crc32.MakeTable(crc32.Castagnoli))
			binary.LittleEndian.PutUint32(msg[len(msg)-4:], sum)
		}
		return msg
	}
	roundTrip := func(msg []byte) (n int32) {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		out, err := readMessage(r, nil)
		if err == nil && responseTo(out) == 3 {
			// FerretDB answers even a moreToCome message.
			out, err = readMessage(r, nil)
		}
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		if responseTo(out) != requestID(msg) {
			t.Fatalf("reply to %d, want %d", responseTo(out), requestID(msg))
		}
		flags, _ := opMsgFlags(out)
		if flags&flagChecksum != 0 {
			out = out[:len(out)-4]
			binary.LittleEndian.PutUint32(out, uint32(len(out)))
		}
		binary.LittleEndian.PutUint32(out[headerLen:], 0)
		reply, err := parseOpMsg(out)
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		if ok, _ := reply.body.Lookup("ok").AsFloat64OK(); ok != 1 {
			t.Fatalf("reply: %s", reply.body)
		}
		return reply.body.Lookup("n").Int32()
	}
	p := m.front
	if n := roundTrip(update(1, flagChecksum, 1)); n != 1 || p.serialized.Load() != 0 {
		t.Fatalf("checksummed update: n = %d, serialized %d; want 1, 0 (forwarded as it was)", n, p.serialized.Load())
	}
	if n := roundTrip(update(2, 0, 0)); n != 0 || p.answered.Load() != 1 {
		t.Fatalf("stale update: n = %d, answered %d; want 0, 1", n, p.answered.Load())
	}
	// An unacknowledged write, then one the front would answer: both go to
	// the server, in order.
	if _, err := conn.Write(update(3, flagMore, 2)); err != nil {
		t.Fatal(err)
	}
	if n := roundTrip(update(4, 0, 3)); n != 1 || p.serialized.Load() != 1 {
		t.Fatalf("update after moreToCome: n = %d, serialized %d; want 1 (after the first), 1", n, p.serialized.Load())
	}
}
