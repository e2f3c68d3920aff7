package embedded

import (
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// BenchmarkFindByID measures findOne({_id}) on a collection of 20,000
// documents, first as FerretDB leaves it (no index its _id lookups can use)
// and then with the expression index that EnsureIDIndexes adds.
//
//	cd dev && go test ./embedded -run '^$' -bench FindByID -benchtime 2s
//
// Measured on the 2-core development machine (go1.26, FerretDB v1.24.0,
// SQLite backend), three runs:
//
//	BenchmarkFindByID/scan-2       100    40672440 ns/op    24.59 finds/s
//	BenchmarkFindByID/scan-2       100    43845804 ns/op    22.81 finds/s
//	BenchmarkFindByID/scan-2       100    42530058 ns/op    23.51 finds/s
//	BenchmarkFindByID/indexed-2   4566      514172 ns/op     1945 finds/s
//	BenchmarkFindByID/indexed-2   4689      507636 ns/op     1970 finds/s
//	BenchmarkFindByID/indexed-2   4747      560254 ns/op     1785 finds/s
//
// About 80 times faster with the index. A scan costs time in proportion to
// the collection (design.md measured ~8 finds/s at 40k documents); the
// indexed lookup does not grow with it. Connecting past Mongo's proxy
// straight to FerretDB measured the same (1871 and 2076 finds/s): the proxy
// is not what a lookup waits for.
func BenchmarkFindByID(b *testing.B) {
	const docs = 20_000
	m := startMongo(b, MongoConfig{indexEvery: -1}) // no index until we say so
	cl := connect(b, m.URI())
	ctx := b.Context()
	coll := cl.Database("bench").Collection("campaigns")
	batch := make([]any, 0, 1000)
	for i := range docs {
		batch = append(batch, bson.D{
			{Key: "_id", Value: fmt.Sprintf("rcm_%08d", i)},
			{Key: "accountId", Value: fmt.Sprintf("org_%03d", i%100)},
			{Key: "tone", Value: "friendly"},
			{Key: "active", Value: true},
		})
		if len(batch) == cap(batch) {
			if _, err := coll.InsertMany(ctx, batch); err != nil {
				b.Fatalf("insert: %v", err)
			}
			batch = batch[:0]
		}
	}

	find := func(b *testing.B) {
		i := 0
		for b.Loop() {
			// A stride that visits the whole collection, not one hot page.
			id := fmt.Sprintf("rcm_%08d", (i*7919)%docs)
			i++
			var got struct {
				ID string `bson:"_id"`
			}
			if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&got); err != nil {
				b.Fatalf("find %s: %v", id, err)
			}
			if got.ID != id {
				b.Fatalf("find %s: got %s", id, got.ID)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "finds/s")
	}
	b.Run("scan", find)
	if err := m.EnsureIDIndexes(ctx); err != nil {
		b.Fatalf("EnsureIDIndexes: %v", err)
	}
	b.Run("indexed", find)
}

// BenchmarkFindIn measures a find of {_id: {$in: [20 keys]}} on a
// collection of 20,000 documents, straight to FerretDB (which reads the
// whole collection) and through the front (a lookup by _id per key).
//
//	cd dev && go test ./embedded -run '^$' -bench FindIn -benchtime 20x
//
// Measured on the 2-core development machine, ten finds each:
//
//	BenchmarkFindIn/ferretdb-2   10   585515614 ns/op
//	BenchmarkFindIn/front-2      10     5425626 ns/op
func BenchmarkFindIn(b *testing.B) {
	const docs, keys = 20_000, 20
	m := startMongo(b, MongoConfig{})
	ctx := b.Context()
	seed := connect(b, m.URI()).Database("bench").Collection("records")
	batch := make([]any, 0, 1000)
	for i := range docs {
		batch = append(batch, bson.D{{Key: "_id", Value: fmt.Sprintf("org_b/%012d", i)}, {Key: "leaf", Value: int64(i)}})
		if len(batch) == cap(batch) {
			if _, err := seed.InsertMany(ctx, batch); err != nil {
				b.Fatalf("insert: %v", err)
			}
			batch = batch[:0]
		}
	}
	if err := m.EnsureIDIndexes(ctx); err != nil {
		b.Fatal(err)
	}
	for _, via := range []struct{ name, uri string }{{"ferretdb", "mongodb://" + m.front.backend + "/"}, {"front", m.URI()}} {
		coll := connect(b, via.uri).Database("bench").Collection("records")
		b.Run(via.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				ids := make(bson.A, keys)
				for k := range ids {
					ids[k] = fmt.Sprintf("org_b/%012d", ((i*keys+k)*7919)%docs)
				}
				i++
				cur, err := coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
				if err != nil {
					b.Fatal(err)
				}
				var got []bson.Raw
				if err := cur.All(ctx, &got); err != nil || len(got) != keys {
					b.Fatalf("found %d of %d: %v", len(got), keys, err)
				}
			}
		})
	}
}
