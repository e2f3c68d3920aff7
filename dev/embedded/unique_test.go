package embedded

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The services make "at most once" rules (one compliance entry per
// (accountId, seq), one item per event id) hold with unique indexes, not
// with read-then-write checks. This test documents that FerretDB's SQLite
// backend enforces a unique compound index created through the driver when
// writers race, for single inserts and for unordered batches alike: exactly
// one insert per key wins, every other one fails with a duplicate-key error
// (and, in a batch, only that document fails).
func TestUniqueCompoundIndexHoldsUnderConcurrentInserts(t *testing.T) {
	const (
		writers = 8
		seqs    = 40
	)
	accounts := []string{"org_a", "org_b"}

	type key struct {
		account string
		seq     int
	}
	// write inserts docs for writer w and returns the keys it won.
	type writeFunc func(coll *mongo.Collection, w int, keys []key) ([]key, error)
	doc := func(w int, k key) bson.D {
		return bson.D{
			{Key: "_id", Value: fmt.Sprintf("w%d_%s_%d", w, k.account, k.seq)},
			{Key: "accountId", Value: k.account},
			{Key: "seq", Value: k.seq},
		}
	}
	tests := []struct {
		name  string
		write writeFunc
	}{
		{"single inserts", func(coll *mongo.Collection, w int, keys []key) ([]key, error) {
			var won []key
			for _, k := range keys {
				_, err := coll.InsertOne(t.Context(), doc(w, k))
				switch {
				case err == nil:
					won = append(won, k)
				case !mongo.IsDuplicateKeyError(err):
					return won, err
				}
			}
			return won, nil
		}},
		{"unordered batches of 10", func(coll *mongo.Collection, w int, keys []key) ([]key, error) {
			var won []key
			for start := 0; start < len(keys); start += 10 {
				batch := keys[start:min(start+10, len(keys))]
				docs := make([]any, len(batch))
				for i, k := range batch {
					docs[i] = doc(w, k)
				}
				_, err := coll.InsertMany(t.Context(), docs, options.InsertMany().SetOrdered(false))
				failed := map[int]bool{}
				var bwe mongo.BulkWriteException
				switch {
				case err == nil:
				case errors.As(err, &bwe) && bwe.WriteConcernError == nil:
					for _, we := range bwe.WriteErrors {
						if !we.HasErrorCode(11000) {
							return won, err
						}
						failed[we.Index] = true
					}
				default:
					return won, err
				}
				for i, k := range batch {
					if !failed[i] {
						won = append(won, k)
					}
				}
			}
			return won, nil
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := startMongo(t, MongoConfig{})
			cl := connect(t, m.URI())
			ctx := t.Context()
			coll := cl.Database(fmt.Sprintf("unique%d", i)).Collection("entries")
			_, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{
				Keys:    bson.D{{Key: "accountId", Value: 1}, {Key: "seq", Value: 1}},
				Options: options.Index().SetUnique(true).SetName("account_seq"),
			})
			if err != nil {
				t.Fatalf("create index: %v", err)
			}

			var all []key
			for _, acc := range accounts {
				for seq := 1; seq <= seqs; seq++ {
					all = append(all, key{acc, seq})
				}
			}
			var (
				mu   sync.Mutex
				wins = map[key]int{}
				errs []error
				wg   sync.WaitGroup
			)
			for w := range writers {
				// Each writer walks the keys in its own order so that the
				// collisions land on different keys at different moments.
				keys := append([]key(nil), all...)
				rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
				wg.Go(func() {
					won, err := tc.write(coll, w, keys)
					mu.Lock()
					defer mu.Unlock()
					for _, k := range won {
						wins[k]++
					}
					if err != nil {
						errs = append(errs, err)
					}
				})
			}
			wg.Wait()

			if len(errs) > 0 {
				t.Fatalf("inserts failed with other than duplicate key: %v", errs)
			}
			for _, k := range all {
				if wins[k] != 1 {
					t.Errorf("key %v: %d inserts succeeded, want exactly 1", k, wins[k])
				}
				n, err := coll.CountDocuments(ctx, bson.D{{Key: "accountId", Value: k.account}, {Key: "seq", Value: k.seq}})
				if err != nil {
					t.Fatalf("count %v: %v", k, err)
				}
				if n != 1 {
					t.Errorf("key %v: %d documents stored, want 1", k, n)
				}
			}
			total, err := coll.CountDocuments(ctx, bson.D{})
			if err != nil {
				t.Fatalf("count: %v", err)
			}
			if want := int64(len(all)); total != want {
				t.Fatalf("documents = %d, want %d", total, want)
			}
		})
	}
}
