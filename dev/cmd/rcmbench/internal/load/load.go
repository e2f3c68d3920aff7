// Package load generates load and records latencies: a closed-loop
// generator (a fixed number of workers, each sending its next request as
// soon as the previous one answered, for a fixed time or count) and an
// open-loop pacer (requests started at a steady rate whatever the answers
// take), and a latency record that keeps every sample, so that its
// percentiles are exact.
package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Latencies is a record of durations. The zero value is empty and ready;
// it is not safe for concurrent use (give each worker its own and Merge).
type Latencies struct {
	d      []time.Duration
	sorted bool
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) {
	l.d = append(l.d, d)
	l.sorted = false
}

// Merge adds every duration of o.
func (l *Latencies) Merge(o *Latencies) {
	l.d = append(l.d, o.d...)
	l.sorted = false
}

// Len is how many durations are recorded.
func (l *Latencies) Len() int { return len(l.d) }

func (l *Latencies) sort() {
	if !l.sorted {
		slices.Sort(l.d)
		l.sorted = true
	}
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100): the
// smallest recorded duration that at least p percent of the durations do
// not exceed. It is 0 when nothing is recorded.
func (l *Latencies) Percentile(p float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	l.sort()
	rank := int(math.Ceil(p / 100 * float64(len(l.d))))
	rank = min(max(rank, 1), len(l.d))
	return l.d[rank-1]
}

// Max is the largest recorded duration (0 when empty).
func (l *Latencies) Max() time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	l.sort()
	return l.d[len(l.d)-1]
}

// Mean is the average duration (0 when empty).
func (l *Latencies) Mean() time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range l.d {
		sum += d
	}
	return sum / time.Duration(len(l.d))
}

// Op is one request of a worker; i numbers the requests of the whole run
// from 0. It returns nil when the request succeeded.
type Op func(ctx context.Context, worker, i int) error

// Config is a closed-loop run: Workers requests in flight at all times,
// until Duration has passed or Count requests were sent (whichever comes
// first; a zero one does not limit). Warmup runs the same load first,
// unrecorded.
type Config struct {
	Workers  int
	Duration time.Duration
	Count    int
	Warmup   time.Duration
}

// Result is what a run measured. Latencies hold successful requests only.
type Result struct {
	Ops       int
	Errors    int
	FirstErr  error
	Elapsed   time.Duration
	Latencies Latencies
}

// Rate is successful requests per second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// ErrNoLimit means a run was asked for with neither a duration nor a count.
var ErrNoLimit = errors.New("a run needs a duration or a count")

// Run runs op with cfg.Workers workers. The context ending stops the run
// early; what was measured until then is returned.
func Run(ctx context.Context, cfg Config, op Op) (Result, error) {
	if cfg.Workers < 1 {
		return Result{}, fmt.Errorf("workers = %d, want at least 1", cfg.Workers)
	}
	if cfg.Duration <= 0 && cfg.Count <= 0 {
		return Result{}, ErrNoLimit
	}
	var next atomic.Int64
	if cfg.Warmup > 0 {
		run(ctx, cfg.Workers, cfg.Warmup, 0, &next, op)
	}
	return run(ctx, cfg.Workers, cfg.Duration, cfg.Count, &next, op), nil
}

type worker struct {
	lat      Latencies
	ops      int
	errs     int
	firstErr error
}

// run is one closed-loop phase; next numbers the requests across phases.
func run(ctx context.Context, workers int, d time.Duration, count int, next *atomic.Int64, op Op) Result {
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	var sent atomic.Int64
	ws := make([]worker, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range ws {
		wg.Go(func() {
			me := &ws[w]
			for ctx.Err() == nil {
				if count > 0 && sent.Add(1) > int64(count) {
					return
				}
				i := int(next.Add(1) - 1)
				t0 := time.Now()
				err := op(ctx, w, i)
				took := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						return // cut short by the end of the run: not a failure
					}
					me.errs++
					if me.firstErr == nil {
						me.firstErr = err
					}
					continue
				}
				me.ops++
				me.lat.Add(took)
			}
		})
	}
	wg.Wait()
	res := Result{Elapsed: time.Since(start)}
	for i := range ws {
		res.Ops += ws[i].ops
		res.Errors += ws[i].errs
		if res.FirstErr == nil {
			res.FirstErr = ws[i].firstErr
		}
		res.Latencies.Merge(&ws[i].lat)
	}
	return res
}

// Pace starts fn(i) at a steady rate, n times (i = 0…n-1), each in its own
// goroutine, without waiting for earlier ones to answer: a slow answer
// delays no later request, so latencies are not understated the way a
// closed loop understates them. It returns once every fn returned, or
// when ctx ends (then after the started ones returned).
func Pace(ctx context.Context, rate float64, n int, fn func(ctx context.Context, i int)) error {
	if rate <= 0 {
		return fmt.Errorf("rate = %v, want more than 0", rate)
	}
	interval := time.Duration(float64(time.Second) / rate)
	var wg sync.WaitGroup
	defer wg.Wait()
	start := time.Now()
	for i := range n {
		// The schedule is fixed from the start, so a late tick does not
		// push the ones after it.
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		wg.Go(func() { fn(ctx, i) })
	}
	return nil
}
