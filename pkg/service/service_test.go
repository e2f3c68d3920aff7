package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/dev/testenv"
	"github.com/rcm-platform/rcm/pkg/service"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

type config struct {
	service.Base
	service.Kafka
	service.Mongo
}

// order records what happened, in order.
type order struct {
	mu     sync.Mutex
	events []string
}

func (o *order) add(e string) {
	o.mu.Lock()
	o.events = append(o.events, e)
	o.mu.Unlock()
}

func (o *order) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.events, ", ")
}

// TestRunShutsDownInOrder starts a service with a slow request in flight,
// a consumer, and a loop that still writes to the store and produces as
// it stops, then cancels its context as SIGTERM does: the listener closes
// at once, the request finishes, only then do the loops stop, the records
// they produced while stopping reach the broker, their store writes
// succeed, the consumer's offsets are committed, and run returns.
func TestRunShutsDownInOrder(t *testing.T) {
	t.Parallel()
	in, out := kafkatest.NewTopic(t, 1), kafkatest.NewTopic(t, 1)
	group := "g-" + strings.ReplaceAll(in, ".", "-")
	vars := servicetest.Env(t, map[string]string{"RCM_DRAIN_TIMEOUT": "10s"})
	db := vars["RCM_MONGODB_DATABASE"]
	const atStop = 200 // records the loop produces as it stops
	var (
		seen                order
		attempts, handled   atomic.Int32
		entered             = make(chan struct{})
		release             = make(chan struct{})
		requestDone, looped atomic.Bool
	)
	run := func(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
		var cfg config
		svc, err := service.Start(ctx, "test", getenv, stdout, &cfg)
		if err != nil {
			return err
		}
		defer svc.Close()
		// A long linger: only a flush sends what the loop produces.
		producer, err := svc.Producer("test-producer", kgo.ProducerLinger(time.Minute))
		if err != nil {
			return err
		}
		consumer, err := svc.Consumer("test-consumer", group, in)
		if err != nil {
			return err
		}
		router := svc.Router(0)
		router.Get("/slow", func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
			w.WriteHeader(http.StatusOK)
			requestDone.Store(true)
			seen.add("request done")
		})
		return svc.Run(ctx, service.Parts{
			Handler: router,
			Prepare: []service.Step{{Name: "flaky", Do: func(context.Context) error {
				if attempts.Add(1) < 3 {
					return errors.New("not yet")
				}
				return nil
			}}},
			Background: []service.Loop{
				svc.Consume(consumer, 100, func(_ context.Context, _ string, _ int32, rs []*kgo.Record) error {
					handled.Add(int32(len(rs)))
					return nil
				}),
				func(ctx context.Context) error {
					<-ctx.Done()
					looped.Store(true)
					seen.add("loop stopping")
					wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
					defer cancel()
					if _, err := svc.DB().Collection("c").InsertOne(wctx, bson.D{{Key: "at", Value: "stop"}}); err != nil {
						return fmt.Errorf("store write while stopping: %w", err)
					}
					for i := range atStop {
						producer.Produce(context.WithoutCancel(ctx), &kgo.Record{Topic: out, Value: fmt.Appendf(nil, "%d", i)}, nil)
					}
					return nil
				},
			},
		})
	}
	inst := servicetest.Start(t, "test", run, vars)
	if got := attempts.Load(); got != 3 {
		t.Fatalf("the start-up step ran %d times, want 3 (two failures retried)", got)
	}

	cl := kafkatest.Client(t)
	if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: in, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	servicetest.Eventually(t, 20*time.Second, "the record to be handled", func() bool { return handled.Load() == 1 })

	status := make(chan int, 1)
	go func() {
		resp, err := http.Get(inst.URL + "/slow")
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-entered
	stopped := make(chan struct{})
	go func() { inst.Stop(); close(stopped) }()
	host := strings.TrimPrefix(inst.URL, "http://")
	servicetest.Eventually(t, 10*time.Second, "the listener to close", func() bool {
		c, err := net.Dial("tcp", host)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if looped.Load() {
		t.Fatal("the loops stopped while a request was still in flight")
	}
	close(release)
	if got := <-status; got != http.StatusOK {
		t.Fatalf("the request in flight: got %d, want 200 (drained)", got)
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return")
	}
	if got, want := seen.String(), "request done, loop stopping"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	// What the loop produced as it stopped reached the broker.
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(t.Context(), out)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup(out, 0); o.Offset != atStop {
		t.Fatalf("%s holds %d records, want the %d produced while stopping (flushed before close)", out, o.Offset, atStop)
	}
	// The store was open while the loop stopped.
	n, err := mongotest.Client(t).Database(db).Collection("c").CountDocuments(t.Context(), bson.D{})
	if err != nil || n != 1 {
		t.Fatalf("documents written while stopping: got %d (%v), want 1", n, err)
	}
	// The consumer's offsets were committed.
	offs, err := adm.FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offs.Lookup(in, 0); o.At != 1 {
		t.Fatalf("group %s committed %d on %s, want 1", group, o.At, in)
	}
	msgs := inst.Logs.Messages()
	if msgs[len(msgs)-1] != "test stopped" {
		t.Fatalf("last log line %q, want %q; all: %q", msgs[len(msgs)-1], "test stopped", msgs)
	}
	if n := countOf(msgs, "start-up step failed; retrying"); n != 2 {
		t.Fatalf("logged %d retries, want 2", n)
	}
}

func countOf(msgs []string, m string) int {
	n := 0
	for _, got := range msgs {
		if got == m {
			n++
		}
	}
	return n
}

// TestConfig: the defaults, the values a service sets before Start (the
// defaults of its own), the environment over both, an empty variable as
// unset, lists without empty items, and a bad value refused by name.
func TestConfig(t *testing.T) {
	t.Parallel()
	type cfg struct {
		service.Base
		service.Kafka
		service.Mongo
		Parties service.List `env:"PARTIES"`
	}
	tests := []struct {
		name    string
		env     map[string]string
		check   func(c cfg) bool
		wantErr string
	}{
		{"defaults", nil, func(c cfg) bool {
			return c.HTTPAddr == "127.0.0.1:8089" && c.Database == "rcm_x" && c.DrainTimeout == 10*time.Second &&
				c.LogLevel == "info" && c.CreateTopics && c.Partitions == 6 && c.SessionTimeout == 10*time.Second &&
				c.LagInterval == 10*time.Second && c.MongoURI == "mongodb://127.0.0.1:27017/" && c.InternalSecret == "" && c.Parties == nil
		}, ""},
		{"environment", map[string]string{
			"RCM_HTTP_ADDR": "127.0.0.1:0", "RCM_MONGODB_DATABASE": "db", "RCM_DRAIN_TIMEOUT": "2s",
			"RCM_KAFKA_CREATE_TOPICS": "false", "RCM_KAFKA_PARTITIONS": "3", "PARTIES": " https://a.example, ,https://b.example,",
		}, func(c cfg) bool {
			return c.HTTPAddr == "127.0.0.1:0" && c.Database == "db" && c.DrainTimeout == 2*time.Second &&
				!c.CreateTopics && c.Partitions == 3 && slices.Equal(c.Parties, []string{"https://a.example", "https://b.example"})
		}, ""},
		{"empty is unset", map[string]string{"RCM_HTTP_ADDR": "", "RCM_DRAIN_TIMEOUT": ""}, func(c cfg) bool {
			return c.HTTPAddr == "127.0.0.1:8089" && c.DrainTimeout == 10*time.Second
		}, ""},
		{"bad duration", map[string]string{"RCM_DRAIN_TIMEOUT": "soon"}, nil, "RCM_DRAIN_TIMEOUT"},
		{"bad bool", map[string]string{"RCM_KAFKA_CREATE_TOPICS": "perhaps"}, nil, "RCM_KAFKA_CREATE_TOPICS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := cfg{Base: service.Base{HTTPAddr: "127.0.0.1:8089"}, Mongo: service.Mongo{Database: "rcm_x"}}
			err := service.Load(t.Context(), func(k string) string { return tc.env[k] }, &c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("got %+v (%v)", c, err)
			}
		})
	}
}

// TestRefusesToStartWithoutSecret: no RCM_INTERNAL_SECRET, no service.
func TestRefusesToStartWithoutSecret(t *testing.T) {
	t.Parallel()
	var c config
	_, err := service.Start(t.Context(), "test", func(string) string { return "" }, io.Discard, &c)
	if err == nil || !strings.Contains(err.Error(), "RCM_INTERNAL_SECRET is not set") {
		t.Fatalf("got %v, want an error naming RCM_INTERNAL_SECRET", err)
	}
}

// TestTopicsCreatesCompactedTopics: the topics step creates each kind of
// topic with its partitions, and the compacted ones with
// cleanup.policy=compact, the others with the broker's default.
func TestTopicsCreatesCompactedTopics(t *testing.T) {
	t.Parallel()
	partitioned, deadLetter, compacted := kafkatest.FreshTopicName(t), kafkatest.FreshTopicName(t), kafkatest.FreshTopicName(t)
	vars := servicetest.Env(t, map[string]string{"RCM_KAFKA_PARTITIONS": "3"})
	var cfg config
	svc, err := service.Start(t.Context(), "test", func(k string) string { return vars[k] }, io.Discard, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	if _, err := svc.Producer("test-producer"); err != nil {
		t.Fatal(err)
	}
	if err := svc.Topics([]string{partitioned}, deadLetter, compacted).Do(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		partitions int
		policy     string
	}{partitioned: {3, "delete"}, deadLetter: {1, "delete"}, compacted: {3, "compact"}}
	adm := kadm.NewClient(kafkatest.Client(t))
	details, err := adm.ListTopics(t.Context(), partitioned, deadLetter, compacted)
	if err != nil {
		t.Fatal(err)
	}
	configs, err := adm.DescribeTopicConfigs(t.Context(), partitioned, deadLetter, compacted)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		if d, ok := details[name]; !ok || d.Err != nil || len(d.Partitions) != w.partitions {
			t.Errorf("%s: got %+v, want a topic of %d partitions", name, d, w.partitions)
		}
		rc, err := configs.On(name, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		policy := "delete" // the broker's default
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				policy = *c.Value
			}
		}
		if policy != w.policy {
			t.Errorf("%s: cleanup.policy=%s, want %s", name, policy, w.policy)
		}
	}
}
