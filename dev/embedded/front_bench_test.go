package embedded

import (
	"fmt"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// BenchmarkFrontFind measures what the front costs a plain read: findOne by
// _id (and ping, the cheapest command FerretDB answers) through the front
// and straight to FerretDB's own listener, one client at a time and eight
// at once.
//
//	cd dev && go test ./embedded -run '^$' -bench FrontFind -benchtime 3s
func BenchmarkFrontFind(b *testing.B) {
	const docs = 1000
	m := startMongo(b, MongoConfig{})
	ctx := b.Context()
	front := connect(b, m.URI())
	coll := front.Database("bench").Collection("finds")
	batch := make([]any, 0, docs)
	for i := range docs {
		batch = append(batch, bson.D{{Key: "_id", Value: fmt.Sprintf("rcm_%08d", i)}, {Key: "tone", Value: "friendly"}})
	}
	if _, err := coll.InsertMany(ctx, batch); err != nil {
		b.Fatalf("insert: %v", err)
	}
	if err := m.EnsureIDIndexes(ctx); err != nil {
		b.Fatalf("EnsureIDIndexes: %v", err)
	}
	direct := connect(b, "mongodb://"+m.front.backend+"/")
	find := func(coll *mongo.Collection, i int) {
		id := fmt.Sprintf("rcm_%08d", (i*7919)%docs)
		var got struct {
			ID string `bson:"_id"`
		}
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&got); err != nil || got.ID != id {
			b.Fatalf("find %s: %v, got %q", id, err, got.ID)
		}
	}
	for _, c := range []struct {
		name string
		cl   *mongo.Client
	}{{"front", front}, {"direct", direct}} {
		coll := c.cl.Database("bench").Collection("finds")
		b.Run(c.name+"/ping", func(b *testing.B) {
			for b.Loop() {
				if err := c.cl.Database("bench").RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
					b.Fatalf("ping: %v", err)
				}
			}
		})
		b.Run(c.name+"/serial", func(b *testing.B) {
			i := 0
			for b.Loop() {
				find(coll, i)
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "finds/s")
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.SetParallelism(4) // 8 goroutines on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					find(coll, i)
					i++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "finds/s")
		})
	}
}
