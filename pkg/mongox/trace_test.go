package mongox

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestCommandsAreTraced: a command run within a recorded span gets a
// client span of its own, its child; one run outside any span gets none.
func TestCommandsAreTraced(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cl, err := connect(mongotest.URI(t), prometheus.NewRegistry(), tp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	db := mongotest.NewDatabase(t)
	coll := cl.Database(db).Collection("things")

	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "missing"}}).Err(); err == nil {
		t.Fatal("found a document that does not exist")
	}
	parent.End()
	if _, err := coll.InsertOne(context.Background(), bson.D{{Key: "_id", Value: "b"}}); err != nil {
		t.Fatal(err)
	}

	var got []string
	for _, s := range exp.GetSpans() {
		if s.Name == "request" {
			continue
		}
		got = append(got, s.Name)
		if s.Parent.SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("%s: got parent %s, want the request's span %s", s.Name, s.Parent.SpanID(), parent.SpanContext().SpanID())
		}
		if s.SpanKind != trace.SpanKindClient {
			t.Errorf("%s: got kind %v, want client", s.Name, s.SpanKind)
		}
		attrs := map[attribute.Key]string{}
		for _, a := range s.Attributes {
			attrs[a.Key] = a.Value.Emit()
		}
		if attrs["db.system.name"] != "mongodb" || attrs["db.namespace"] != db || attrs["db.collection.name"] != "things" {
			t.Errorf("%s: got attributes %v, want db.system.name, db.namespace and db.collection.name", s.Name, attrs)
		}
	}
	if len(got) != 2 || got[0] != "insert things" || got[1] != "find things" {
		t.Errorf("got spans %v, want [insert things, find things] and none outside the request", got)
	}
}
