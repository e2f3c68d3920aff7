package embedded

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestFrontAnswersInOnIDFromTheIndex: FerretDB answers a find filtered on
// {_id: {$in: [...]}} with a scan of the whole collection; the front
// answers it with one lookup by _id per key, which the _id index serves.
// Every find here gives through the front the documents FerretDB itself
// gives (duplicate and missing keys included), in _id order as MongoDB's
// index gives them, and the finds the front must not answer (other
// conditions, projections, limits, small batches, other key types) go to
// FerretDB and give its answer, cursor and all.
func TestFrontAnswersInOnIDFromTheIndex(t *testing.T) {
	m := startMongo(t, MongoConfig{})
	front := connect(t, m.URI())
	direct := connect(t, "mongodb://"+m.front.backend+"/")
	ctx := t.Context()
	const docs = 300
	batch := make([]any, 0, docs+1)
	for i := range docs {
		batch = append(batch, bson.D{{Key: "_id", Value: fmt.Sprintf("k%04d", (i*7)%docs)}, {Key: "n", Value: int64(i)}, {Key: "even", Value: i%2 == 0}})
	}
	oid := bson.NewObjectID()
	batch = append(batch, bson.D{{Key: "_id", Value: oid}, {Key: "n", Value: int64(-1)}})
	if _, err := front.Database("front").Collection("in").InsertMany(ctx, batch); err != nil {
		t.Fatalf("insert: %v", err)
	}
	viaFront := front.Database("front").Collection("in")
	viaDirect := direct.Database("front").Collection("in")

	keys := func(ids ...int) bson.A {
		out := bson.A{}
		for _, i := range ids {
			out = append(out, fmt.Sprintf("k%04d", i))
		}
		return out
	}
	many := make([]int, 0, 150)
	for i := range 150 {
		many = append(many, (i*13)%docs)
	}
	in := func(vals bson.A) bson.D {
		return bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: vals}}}}
	}
	cases := []struct {
		name     string
		filter   bson.D
		opts     *options.FindOptionsBuilder
		answered bool
		order    int // 1 or -1: the front's answer is in that _id order; 0: unchecked
	}{
		{"some keys, out of order", in(keys(250, 3, 77, 140)), nil, true, 1},
		{"duplicate and missing keys", in(append(keys(5, 5, 9), "missing", "k9999", "k0009")), nil, true, 1},
		{"no key found", in(bson.A{"nope", "none"}), nil, true, 1},
		{"an empty list", in(bson.A{}), nil, true, 1},
		{"more than a default first batch", in(keys(many...)), nil, true, 1},
		{"strings and an ObjectID", in(append(keys(4, 2), oid)), nil, true, 1},
		{"sorted by _id descending", in(keys(8, 1, 4)), options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}), true, -1},
		{"sorted by _id", in(keys(8, 1, 4)), options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}), true, 1},
		{"a batch size the keys fit in", in(keys(8, 1, 4)), options.Find().SetBatchSize(3), true, 1},
		{"a batch size smaller than the answer", in(keys(many...)), options.Find().SetBatchSize(10), false, 0},
		{"another condition", append(in(keys(1, 2, 3, 4)), bson.E{Key: "even", Value: true}), nil, false, 0},
		{"a projection", in(keys(1, 2)), options.Find().SetProjection(bson.D{{Key: "n", Value: 1}}), false, 0},
		{"a limit", in(keys(1, 2, 3)), options.Find().SetLimit(2).SetSort(bson.D{{Key: "_id", Value: 1}}), false, 0},
		{"a skip", in(keys(1, 2, 3)), options.Find().SetSkip(1).SetSort(bson.D{{Key: "_id", Value: 1}}), false, 0},
		{"sorted on another field", in(keys(1, 2, 3)), options.Find().SetSort(bson.D{{Key: "n", Value: 1}}), false, 0},
		{"a number key", in(bson.A{int32(1), "k0001"}), nil, false, 0},
		{"a regular expression", in(bson.A{bson.Regex{Pattern: "^k000"}}), nil, false, 0},
		{"not an array", bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: "k0001"}}}}, nil, false, 0},
		{"$in beside another operator", bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: keys(1, 2)}, {Key: "$ne", Value: "k0001"}}}}, nil, false, 0},
	}
	find := func(coll *mongo.Collection, filter bson.D, opts *options.FindOptionsBuilder) ([]bson.Raw, string) {
		if opts == nil {
			opts = options.Find()
		}
		cur, err := coll.Find(ctx, filter, opts)
		if err != nil {
			return nil, errText(err)
		}
		var out []bson.Raw
		for cur.Next(ctx) {
			out = append(out, slices.Clone(cur.Current))
		}
		if err := cur.Err(); err != nil {
			return out, errText(err)
		}
		return out, ""
	}
	byID := func(a, b bson.Raw) int { return compareIDs(a.Lookup("_id"), b.Lookup("_id")) }
	for _, c := range cases {
		want, wantErr := find(viaDirect, c.filter, c.opts)
		before := m.front.inSplit.Load()
		got, gotErr := find(viaFront, c.filter, c.opts)
		answered := m.front.inSplit.Load() != before
		if answered != c.answered {
			t.Errorf("%s: answered by the front %v, want %v", c.name, answered, c.answered)
		}
		if gotErr != wantErr {
			t.Errorf("%s: error through the front %q, FerretDB itself %q", c.name, gotErr, wantErr)
			continue
		}
		if c.order != 0 {
			if !slices.IsSortedFunc(got, func(a, b bson.Raw) int { return c.order * byID(a, b) }) {
				t.Errorf("%s: the front's answer is not in _id order %d", c.name, c.order)
			}
		}
		if c.answered {
			// FerretDB gives a scan's order; MongoDB's index gives _id order.
			slices.SortFunc(want, byID)
			slices.SortFunc(got, byID)
		}
		if !slices.EqualFunc(got, want, func(a, b bson.Raw) bool { return bytes.Equal(a, b) }) {
			t.Errorf("%s: %d documents through the front, FerretDB itself %d (or they differ):\n%v\n%v", c.name, len(got), len(want), got, want)
		}
	}

	// The reply itself, as the driver reads it: the cursor's fields.
	var fromFront, fromDirect bson.Raw
	cmd := bson.D{{Key: "find", Value: "in"}, {Key: "filter", Value: in(keys(1))}}
	if err := front.Database("front").RunCommand(ctx, cmd).Decode(&fromFront); err != nil {
		t.Fatal(err)
	}
	if err := direct.Database("front").RunCommand(ctx, cmd).Decode(&fromDirect); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromFront, fromDirect) {
		t.Errorf("find reply through the front\n%s\nFerretDB itself\n%s", fromFront, fromDirect)
	}
}
