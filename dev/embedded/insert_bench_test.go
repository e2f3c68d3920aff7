package embedded

import (
	"bytes"
	"fmt"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// BenchmarkInsertOneConcurrent measures single inserts from 32 concurrent
// writers (the benchmark's start-campaign load), through the front and
// straight to FerretDB: the rate and the latency spread, p99 ÷ p50. While
// it runs it samples every goroutine's stack every 20 ms and reports where
// the writers' time goes, as shares of the samples of goroutines busy in
// the store: waiting for SQLite's write lock in its busy handler (a sleep
// of 1 to 100 ms between tries, so the writer that comes last may get in
// first), waiting for the front's writer gate, or anywhere else (running
// SQL, waiting for a database/sql connection, the wire).
//
//	cd dev && go test ./embedded -run '^$' -bench InsertOneConcurrent -benchtime 4000x
func BenchmarkInsertOneConcurrent(b *testing.B) {
	m := startMongo(b, MongoConfig{})
	ctx := b.Context()
	record := func(i int) bson.D {
		return bson.D{
			{Key: "_id", Value: fmt.Sprintf("doc_%09d", i)}, {Key: "accountId", Value: "user_bench"},
			{Key: "loan", Value: bson.D{{Key: "status", Value: "BEHIND"}}}, {Key: "version", Value: int64(1)},
			{Key: "revision", Value: int64(2)},
			{Key: "campaigns", Value: bson.A{bson.D{{Key: "id", Value: fmt.Sprintf("rcm_%09d", i)}, {Key: "sms", Value: true},
				{Key: "tone", Value: "friendly"}, {Key: "cadence", Value: "weekly"}}}},
			{Key: "outbox", Value: bson.A{bson.D{{Key: "id", Value: fmt.Sprintf("evt_%09d", i)},
				{Key: "data", Value: string(bytes.Repeat([]byte("x"), 900))}}}},
		}
	}
	const writers = 32
	runs := 0
	for _, c := range []struct{ name, uri string }{{"front", m.URI()}, {"direct", "mongodb://" + m.front.backend + "/"}} {
		b.Run(c.name, func(b *testing.B) {
			cl := connect(b, c.uri)
			runs++
			coll := cl.Database("bench").Collection(fmt.Sprintf("records_%s_%d", c.name, runs))
			if _, err := coll.InsertOne(ctx, record(-1)); err != nil { // create it
				b.Fatal(err)
			}
			var next atomic.Int64
			lat := make([][]time.Duration, writers)
			stop := make(chan struct{})
			sampled := make(chan map[string]int)
			go func() { sampled <- sampleStacks(stop, 20*time.Millisecond) }()
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for {
						i := int(next.Add(1))
						if i > b.N {
							return
						}
						t := time.Now()
						if _, err := coll.InsertOne(ctx, record(i)); err != nil {
							b.Error(err)
							return
						}
						lat[w] = append(lat[w], time.Since(t))
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(stop)
			where := <-sampled
			all := slices.Concat(lat...)
			slices.Sort(all)
			p := func(q float64) time.Duration { return all[min(len(all)-1, int(q*float64(len(all))))] }
			b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "inserts/s")
			b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(p(0.99))/float64(p(0.5)), "p99/p50")
			total := where["busy"] + where["gate"] + where["other"]
			if total > 0 {
				b.ReportMetric(100*float64(where["busy"])/float64(total), "%busy-sleep")
				b.ReportMetric(100*float64(where["gate"])/float64(total), "%gate")
			}
		})
	}
}

// sampleStacks counts, every every until stop, the goroutines inside the
// store by where they are: SQLite's busy handler ("busy"), the front's
// writer gate ("gate"), elsewhere in FerretDB's SQLite backend ("other").
func sampleStacks(stop <-chan struct{}, every time.Duration) map[string]int {
	out := map[string]int{}
	var buf bytes.Buffer
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return out
		case <-tick.C:
		}
		buf.Reset()
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
		for g := range bytes.SplitSeq(buf.Bytes(), []byte("\n\n")) {
			switch {
			case bytes.Contains(g, []byte("_sqliteDefaultBusyCallback")):
				out["busy"]++
			case bytes.Contains(g, []byte("embedded.(*writeGates).enter")):
				out["gate"]++
			case bytes.Contains(g, []byte("FerretDB/internal/backends/sqlite")):
				out["other"]++
			}
		}
	}
}
