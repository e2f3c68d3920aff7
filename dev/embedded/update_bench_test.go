package embedded

import (
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// BenchmarkUpdateByID measures the single-document updates an outbox
// relay makes, on collections of growing size, with the _id index that
// EnsureIDIndexes adds. "id+revision" filters on {_id, revision} (a
// compare-and-set) and sets the outbox and the next revision; "id+pullAll"
// filters on {_id} alone and pulls the published outbox element, given
// whole (FerretDB's $pull and $pullAll match elements by equality, not by
// a query).
//
//	cd dev && go test ./embedded -run '^$' -bench UpdateByID -benchtime 100x
//
// FerretDB v1.24.0's SQLite backend turns a filter into SQL only when it is
// exactly {_id: <string or ObjectID>} (internal/backends/sqlite/collection.go);
// any other filter, {_id, revision} included, reads and decodes every
// document of the collection. Straight to FerretDB (the front before it
// read requests), on the 2-core development machine (go1.26), 20x:
//
//	BenchmarkUpdateByID/id+revision/docs=1000-2      20    122939284 ns/op
//	BenchmarkUpdateByID/id+pullAll/docs=1000-2       20      2698084 ns/op
//	BenchmarkUpdateByID/id+revision/docs=10000-2     20    965813425 ns/op
//	BenchmarkUpdateByID/id+pullAll/docs=10000-2      20      1705790 ns/op
//
// about 0.1 ms per document in the collection. The front (front.go) now
// reads the document by _id, checks the revision itself and sends the
// update filtered on _id alone, 100x:
//
//	BenchmarkUpdateByID/id+revision/docs=1000-2     100      1732904 ns/op
//	BenchmarkUpdateByID/id+pullAll/docs=1000-2      100      1677045 ns/op
//	BenchmarkUpdateByID/id+revision/docs=10000-2    100      1471118 ns/op
//	BenchmarkUpdateByID/id+pullAll/docs=10000-2     100      2593492 ns/op
//
// The compare-and-set no longer grows with the collection and costs about
// what the update by _id alone does (the extra lookup by _id is ~0.3 ms;
// the spread between runs on the shared machine is larger).
func BenchmarkUpdateByID(b *testing.B) {
	m := startMongo(b, MongoConfig{})
	cl := connect(b, m.URI())
	ctx := b.Context()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	element := func(i int) bson.D {
		return bson.D{
			{Key: "id", Value: fmt.Sprintf("evt_%08d", i)}, {Key: "type", Value: "campaign_started"},
			{Key: "accountId", Value: fmt.Sprintf("org_%03d", i%100)}, {Key: "subject", Value: "doc_1"},
			{Key: "time", Value: at}, {Key: "data", Value: `{"eventType":"campaign_started"}`},
		}
	}
	for _, docs := range []int{1_000, 10_000} {
		coll := cl.Database("bench").Collection(fmt.Sprintf("campaigns_%d", docs))
		batch := make([]any, 0, 1000)
		for i := range docs {
			batch = append(batch, bson.D{
				{Key: "_id", Value: fmt.Sprintf("rcm_%08d", i)},
				{Key: "accountId", Value: fmt.Sprintf("org_%03d", i%100)},
				{Key: "tone", Value: "friendly"}, {Key: "active", Value: true},
				{Key: "revision", Value: int64(0)},
				{Key: "outbox", Value: bson.A{element(i)}},
			})
			if len(batch) == cap(batch) {
				if _, err := coll.InsertMany(ctx, batch); err != nil {
					b.Fatalf("insert: %v", err)
				}
				batch = batch[:0]
			}
		}
		if err := m.EnsureIDIndexes(ctx); err != nil {
			b.Fatalf("EnsureIDIndexes: %v", err)
		}
		// Each case updates its own documents, the newest first, as a relay
		// does: the odd ones, then the even ones. A scan finds the newest
		// last.
		run := func(first int, update func(i int) (bson.D, bson.D)) func(b *testing.B) {
			return func(b *testing.B) {
				k := first
				for b.Loop() {
					i := docs - 1 - k%docs
					filter, upd := update(i)
					res, err := coll.UpdateOne(ctx, filter, upd)
					if err != nil {
						b.Fatalf("update: %v", err)
					}
					if res.MatchedCount != 1 || (k < docs && res.ModifiedCount != 1) {
						b.Fatalf("update %d: matched %d, modified %d", i, res.MatchedCount, res.ModifiedCount)
					}
					k += 2
				}
			}
		}
		revision := map[int]int64{}
		b.Run(fmt.Sprintf("id+revision/docs=%d", docs), run(1, func(i int) (bson.D, bson.D) {
			r := revision[i]
			revision[i] = r + 1
			return bson.D{{Key: "_id", Value: fmt.Sprintf("rcm_%08d", i)}, {Key: "revision", Value: r}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "outbox", Value: bson.A{}}, {Key: "revision", Value: r + 1}}}}
		}))
		b.Run(fmt.Sprintf("id+pullAll/docs=%d", docs), run(0, func(i int) (bson.D, bson.D) {
			return bson.D{{Key: "_id", Value: fmt.Sprintf("rcm_%08d", i)}},
				bson.D{{Key: "$pullAll", Value: bson.D{{Key: "outbox", Value: bson.A{element(i)}}}}}
		}))
	}
}
