// Package mongox builds the platform's MongoDB clients: a command monitor
// that measures and traces every command, short server-selection timeouts so an outage
// surfaces as an error rather than a hang, and error classification.
package mongox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// Connect returns a client of uri whose commands are measured on reg and
// traced with the global tracer provider.
func Connect(uri string, reg prometheus.Registerer) (*mongo.Client, error) {
	return connect(uri, reg, otel.GetTracerProvider())
}

func connect(uri string, reg prometheus.Registerer, tp trace.TracerProvider) (*mongo.Client, error) {
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "rcm_mongodb_command_duration_seconds",
		Help:    "MongoDB command duration, by command name and outcome (ok or error).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"command", "outcome"})
	if err := reg.Register(duration); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		duration = are.ExistingCollector.(*prometheus.HistogramVec)
	}
	tracer := newCommandTracer(tp)
	monitor := &event.CommandMonitor{
		Started: tracer.started,
		Succeeded: func(_ context.Context, e *event.CommandSucceededEvent) {
			duration.WithLabelValues(e.CommandName, "ok").Observe(e.Duration.Seconds())
			tracer.finished(&e.CommandFinishedEvent, nil)
		},
		Failed: func(_ context.Context, e *event.CommandFailedEvent) {
			duration.WithLabelValues(e.CommandName, "error").Observe(e.Duration.Seconds())
			tracer.finished(&e.CommandFinishedEvent, e.Failure)
		},
	}
	cl, err := mongo.Connect(clientOptions(uri).SetMonitor(monitor))
	if err != nil {
		return nil, fmt.Errorf("mongodb client: %w", err)
	}
	return cl, nil
}

// clientOptions are the options of every client: short timeouts, retryable
// writes, and writes acknowledged by a majority of the replica set with
// journaling. Every write the platform makes is one that the compliance
// log or a committed offset rests on (an offset is committed once the
// write is acknowledged): one acknowledged by the primary alone could be
// rolled back by a failover after the offset moved on. It overrides a w or
// journal in the URI. (The embedded store has one member and accepts it.)
func clientOptions(uri string) *options.ClientOptions {
	return options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(3 * time.Second).
		SetConnectTimeout(3 * time.Second).
		SetRetryWrites(true).
		SetWriteConcern(majorityJournaled())
}

func majorityJournaled() *writeconcern.WriteConcern {
	wc := writeconcern.Majority()
	j := true
	wc.Journal = &j
	return wc
}

// Dial is Connect plus the function that disconnects, waiting up to five
// seconds for in-flight operations: what a service defers.
func Dial(uri string, reg prometheus.Registerer) (*mongo.Client, func(), error) {
	cl, err := Connect(uri, reg)
	if err != nil {
		return nil, nil, err
	}
	return cl, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cl.Disconnect(ctx)
	}, nil
}

// Ping is a readiness check of cl.
func Ping(cl *mongo.Client) func(ctx context.Context) error {
	return func(ctx context.Context) error { return cl.Ping(ctx, readpref.Primary()) }
}

// ErrUnavailable marks a store failure that a retry later may cure: the
// server could not be reached or did not answer in time.
// It is Temporary, which httpx answers with 503 and Retry-After.
var ErrUnavailable error = unavailable{}

type unavailable struct{}

func (unavailable) Error() string   { return "store unavailable" }
func (unavailable) Temporary() bool { return true }

// Classify wraps err with ErrUnavailable when it is a network, timeout or
// server-selection failure, so that callers answer 503 instead of 500.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var sse topology.ServerSelectionError
	if mongo.IsNetworkError(err) || mongo.IsTimeout(err) || errors.As(err, &sse) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, mongo.ErrClientDisconnected) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// IsDuplicateKey reports whether err is a unique-index violation.
func IsDuplicateKey(err error) bool { return mongo.IsDuplicateKeyError(err) }

// Index is an index to create if missing.
type Index = mongo.IndexModel

// EnsureIndexes creates the indexes of coll that do not exist yet. It
// creates them one per command: FerretDB drops the connection when one
// createIndexes command names several indexes of which some exist.
func EnsureIndexes(ctx context.Context, coll *mongo.Collection, idx ...Index) error {
	for _, ix := range idx {
		if _, err := coll.Indexes().CreateOne(ctx, ix); err != nil {
			return fmt.Errorf("indexes of %s: %w", coll.Name(), err)
		}
	}
	return nil
}
