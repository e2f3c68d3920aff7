package seqlog_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/event"
)

// commandCounter counts the commands a client sends to the store.
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		switch e.CommandName {
		case "find", "insert", "update", "getMore":
			c.n.Add(1)
		}
	}}
}

// countedLog returns a fresh database's log as two processes see it: mk
// makes a Log on a client whose store commands the counter counts.
func countedLog(t *testing.T) (mk func() *seqlog.Log, commands *commandCounter) {
	t.Helper()
	commands = &commandCounter{}
	cl := mongotest.MonitoredClient(t, commands.monitor())
	db := cl.Database(mongotest.NewDatabase(t))
	mk = func() *seqlog.Log {
		return seqlog.New(seqlog.Config{Docs: db.Collection("docs"), Heads: db.Collection("heads"), LinkField: "link"})
	}
	if err := mk().EnsureIndexes(context.Background()); err != nil {
		t.Fatal(err)
	}
	return mk, commands
}

func eventIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return ids
}

// TestCatchUpAfterCrash: a process appends a batch, all of it or its
// first half, and dies before committing its offsets; the next one gets
// the same batch again. Recognising each replayed event costs about one
// lookup, so catching up costs about what the first pass did, not a search
// per event. It prints the figures (time and store commands of the first
// pass and of the catch-up). The batches of 2,000 take several seconds
// each and run when RCM_TEST_LONG is set.
func TestCatchUpAfterCrash(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		n, done int // events in the batch, of which the crashed pass wrote done
		long    bool
	}{
		{"400 all written", 400, 400, false},
		{"400 half written", 400, 200, false},
		{"2000 all written", 2000, 2000, true},
		{"2000 half written", 2000, 1000, true},
	} {
		if tc.long && os.Getenv("RCM_TEST_LONG") == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ids := eventIDs("e", tc.n)

			// The first pass of the same batch, into an empty log.
			mk, commands := countedLog(t)
			start := time.Now()
			if _, err := mk().Append(ctx, "org_f", items("org_f", ids...)); err != nil {
				t.Fatal(err)
			}
			firstTook, firstCommands := time.Since(start), commands.n.Load()

			mk, commands = countedLog(t)
			if _, err := mk().Append(ctx, "org_c", items("org_c", ids[:tc.done]...)); err != nil {
				t.Fatal(err)
			}
			before := commands.n.Load()
			start = time.Now()
			res, err := mk().Append(ctx, "org_c", items("org_c", ids...))
			if err != nil {
				t.Fatal(err)
			}
			took, spent := time.Since(start), commands.n.Load()-before
			figure(t, "%d events, %d already written: catch-up %v with %d store commands; first pass %v with %d (%.1fx the time)",
				tc.n, tc.done, took.Round(time.Millisecond), spent, firstTook.Round(time.Millisecond), firstCommands,
				float64(took)/float64(firstTook))
			for i, r := range res {
				if want := (seqlog.Result{EventID: ids[i], Seq: int64(i + 1), Replay: i < tc.done}); r != want {
					t.Fatalf("result %d: got %+v, want %+v", i, r, want)
				}
			}
			if limit := int64(3 * tc.n); spent > limit {
				t.Fatalf("catching up on %d events cost %d store commands, want at most %d", tc.n, spent, limit)
			}
			if got := readAll(t, mk(), "org_c"); fmt.Sprint(got) != fmt.Sprint(ids) {
				t.Fatalf("got %v\nwant %v", got, ids)
			}
		})
	}
}

// TestReplayBeyondTheWindow: an event recorded long before the batch is
// still recorded once; it is reported as a replay of unknown place, found
// with a bounded number of lookups, and the rest of the batch goes on.
func TestReplayBeyondTheWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mk, commands := countedLog(t)
	ids := eventIDs("e", 400)
	if _, err := mk().Append(ctx, "org_w", items("org_w", ids...)); err != nil {
		t.Fatal(err)
	}
	before := commands.n.Load()
	res, err := mk().Append(ctx, "org_w", items("org_w", "n1", ids[0], "n2", ids[399]))
	if err != nil {
		t.Fatal(err)
	}
	spent := commands.n.Load() - before
	want := []seqlog.Result{{EventID: "n1", Seq: 401}, {EventID: ids[0], Replay: true}, {EventID: "n2", Seq: 402}, {EventID: ids[399], Seq: 400, Replay: true}}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("result %d: got %+v, want %+v", i, res[i], want[i])
		}
	}
	// The head, two inserts and a probe per failure, and the window.
	if limit := int64(4 + 256 + 10); spent > limit {
		t.Fatalf("cost %d store commands, want at most %d", spent, limit)
	}
	if got := readAll(t, mk(), "org_w"); fmt.Sprint(got) != fmt.Sprint(append(ids, "n1", "n2")) {
		t.Fatalf("got %v", got)
	}
}

// TestTwoWritersLargeBatches: two processes append one stream in batches
// larger than the store applies at once; no gap, no fork, each event once.
func TestTwoWritersLargeBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mk, _ := countedLog(t)
	stream := eventIDs("e", 900)
	var wg sync.WaitGroup
	for w, batch := range []int{170, 230} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := mk()
			for i := 0; i < len(stream); i += batch {
				if _, err := l.Append(ctx, "org_2l", items("org_2l", stream[i:min(i+batch, len(stream))]...)); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := readAll(t, mk(), "org_2l"); fmt.Sprint(got) != fmt.Sprint(stream) {
		t.Fatalf("got %v\nwant %v", got, stream)
	}
}

var (
	figuresMu sync.Mutex
	figures   []string
)

// figure records a measured figure: logged, and added to the file
// RCM_TEST_FIGURES names, which make test prints.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	line := t.Name() + ": " + fmt.Sprintf(format, args...)
	t.Log(line)
	figuresMu.Lock()
	defer figuresMu.Unlock()
	figures = append(figures, line)
}

func writeFigures() {
	path := os.Getenv("RCM_TEST_FIGURES")
	if path == "" || len(figures) == 0 {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(strings.Join(figures, "\n") + "\n")
}

// TestAnEventTwiceInOneBatch: the second copy is a replay of the first.
func TestAnEventTwiceInOneBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mk, _ := countedLog(t)
	res, err := mk().Append(ctx, "org_d", items("org_d", "a", "b", "a", "c"))
	if err != nil {
		t.Fatal(err)
	}
	want := []seqlog.Result{{EventID: "a", Seq: 1}, {EventID: "b", Seq: 2}, {EventID: "a", Seq: 1, Replay: true}, {EventID: "c", Seq: 3}}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("result %d: got %+v, want %+v", i, res[i], want[i])
		}
	}
	if got := readAll(t, mk(), "org_d"); fmt.Sprint(got) != "[a b c]" {
		t.Fatalf("got %v", got)
	}
}
