package testenv

import (
	"os"
	"testing"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestBothServersServeOneTest(t *testing.T) {
	topic := kafkatest.NewTopic(t, 1)
	if err := kafkatest.Client(t, kgo.DefaultProduceTopic(topic)).ProduceSync(t.Context(), &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	db := mongotest.NewDatabase(t)
	if _, err := mongotest.Client(t).Database(db).Collection("c").InsertOne(t.Context(), bson.D{{Key: "x", Value: 1}}); err != nil {
		t.Fatalf("insert: %v", err)
	}
}
