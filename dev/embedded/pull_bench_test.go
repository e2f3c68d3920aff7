package embedded

import (
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// BenchmarkPullAllBatch measures the outbox clean-up of 32 records: one
// $pullAll command per record against one update command holding a
// statement per record, through the front.
//
//	cd dev && go test ./embedded -run '^$' -bench PullAllBatch -benchtime 50x
func BenchmarkPullAllBatch(b *testing.B) {
	const records = 32
	m := startMongo(b, MongoConfig{})
	ctx := b.Context()
	cl := connect(b, m.URI())
	elem := func(r, i int) bson.D {
		return bson.D{{Key: "id", Value: fmt.Sprintf("evt_%03d_%06d", r, i)}, {Key: "data", Value: `{"eventType":"campaign_started"}`}}
	}
	for _, mode := range []string{"per-record", "one-command"} {
		b.Run(mode, func(b *testing.B) {
			coll := cl.Database("bench").Collection("pull_" + mode + fmt.Sprint(b.N))
			var recs []any
			for r := range records {
				recs = append(recs, bson.D{{Key: "_id", Value: fmt.Sprintf("doc_%03d", r)}, {Key: "outbox", Value: bson.A{}}})
			}
			if _, err := coll.InsertMany(ctx, recs); err != nil {
				b.Fatal(err)
			}
			if err := m.EnsureIDIndexes(ctx); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				b.StopTimer()
				for r := range records {
					if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprintf("doc_%03d", r)}},
						bson.D{{Key: "$push", Value: bson.D{{Key: "outbox", Value: elem(r, i)}}}}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				var models []mongo.WriteModel
				for r := range records {
					f := bson.D{{Key: "_id", Value: fmt.Sprintf("doc_%03d", r)}}
					u := bson.D{{Key: "$pullAll", Value: bson.D{{Key: "outbox", Value: bson.A{elem(r, i)}}}}}
					if mode == "per-record" {
						if _, err := coll.UpdateOne(ctx, f, u); err != nil {
							b.Fatal(err)
						}
						continue
					}
					models = append(models, mongo.NewUpdateOneModel().SetFilter(f).SetUpdate(u))
				}
				if len(models) > 0 {
					if _, err := coll.BulkWrite(ctx, models); err != nil {
						b.Fatal(err)
					}
				}
				i++
			}
			b.ReportMetric(float64(b.N*records)/b.Elapsed().Seconds(), "removals/s")
		})
	}
}
