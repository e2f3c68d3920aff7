package load

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPercentileNearestRank(t *testing.T) {
	t.Parallel()
	var l Latencies
	// 1..100 ms, added out of order.
	for i := 100; i >= 1; i-- {
		l.Add(ms(i))
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{
		{50, ms(50)},
		{99, ms(99)},
		{99.9, ms(100)},
		{100, ms(100)},
		{1, ms(1)},
		{0.001, ms(1)},
	}
	for _, tt := range tests {
		if got := l.Percentile(tt.p); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := l.Max(); got != ms(100) {
		t.Errorf("max = %v, want 100ms", got)
	}
	if got := l.Mean(); got != 50500*time.Microsecond {
		t.Errorf("mean = %v, want 50.5ms", got)
	}
}

func TestPercentileSmallAndEmpty(t *testing.T) {
	t.Parallel()
	var empty Latencies
	if empty.Percentile(99) != 0 || empty.Max() != 0 || empty.Mean() != 0 {
		t.Fatal("an empty record has no latencies")
	}
	var l Latencies
	l.Add(ms(7))
	l.Add(ms(3))
	if got := l.Percentile(50); got != ms(3) {
		t.Errorf("p50 of {3,7} = %v, want 3ms", got)
	}
	if got := l.Percentile(51); got != ms(7) {
		t.Errorf("p51 of {3,7} = %v, want 7ms", got)
	}
	// Adding after a percentile was read sorts again.
	l.Add(ms(1))
	if got := l.Percentile(1); got != ms(1) {
		t.Errorf("p1 after adding 1ms = %v", got)
	}
	var m Latencies
	m.Merge(&l)
	m.Merge(&l)
	if m.Len() != 6 || m.Percentile(100) != ms(7) {
		t.Errorf("merged: len %d max %v", m.Len(), m.Percentile(100))
	}
}

func TestRunCountsEveryRequestOnce(t *testing.T) {
	t.Parallel()
	const n = 1000
	var seen sync.Map
	var inFlight, most atomic.Int64
	res, err := Run(context.Background(), Config{Workers: 8, Count: n}, func(ctx context.Context, w, i int) error {
		if _, dup := seen.LoadOrStore(i, w); dup {
			t.Errorf("request %d sent twice", i)
		}
		cur := inFlight.Add(1)
		for {
			m := most.Load()
			if cur <= m || most.CompareAndSwap(m, cur) {
				break
			}
		}
		time.Sleep(50 * time.Microsecond)
		inFlight.Add(-1)
		if i%10 == 0 {
			return errors.New("every tenth fails")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops+res.Errors != n || res.Errors != n/10 {
		t.Fatalf("ops %d errors %d, want %d and %d", res.Ops, res.Errors, n-n/10, n/10)
	}
	if res.Latencies.Len() != res.Ops {
		t.Fatalf("%d latencies for %d successes", res.Latencies.Len(), res.Ops)
	}
	if res.FirstErr == nil {
		t.Fatal("the first error is kept")
	}
	if m := most.Load(); m > 8 {
		t.Fatalf("%d requests in flight, want at most 8", m)
	}
	if res.Rate() <= 0 {
		t.Fatal("a rate")
	}
}

func TestRunStopsAtTheDuration(t *testing.T) {
	t.Parallel()
	var during atomic.Int64
	res, err := Run(context.Background(), Config{Workers: 2, Duration: 100 * time.Millisecond, Warmup: 50 * time.Millisecond},
		func(ctx context.Context, w, i int) error {
			during.Add(1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
				return nil
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Elapsed < 100*time.Millisecond || res.Elapsed > time.Second {
		t.Fatalf("elapsed %v, want about 100ms", res.Elapsed)
	}
	if res.Errors != 0 {
		t.Fatalf("requests cut by the end of the run are no errors: %d (%v)", res.Errors, res.FirstErr)
	}
	// The warm-up ran too, unrecorded.
	if int64(res.Ops) >= during.Load() {
		t.Fatalf("recorded %d of %d requests: the warm-up is not recorded", res.Ops, during.Load())
	}
}

func TestRunNeedsALimit(t *testing.T) {
	t.Parallel()
	if _, err := Run(context.Background(), Config{Workers: 1}, nil); !errors.Is(err, ErrNoLimit) {
		t.Fatalf("got %v", err)
	}
	if _, err := Run(context.Background(), Config{Count: 1}, nil); err == nil {
		t.Fatal("no workers must fail")
	}
}

func TestPaceKeepsTheRate(t *testing.T) {
	t.Parallel()
	const n = 20
	starts := make([]time.Time, n)
	begin := time.Now()
	err := Pace(context.Background(), 200, n, func(ctx context.Context, i int) {
		starts[i] = time.Now()
		time.Sleep(30 * time.Millisecond) // slower than the interval: the pace must not wait for it
	})
	if err != nil {
		t.Fatal(err)
	}
	last := starts[n-1].Sub(begin)
	// 19 intervals of 5 ms: about 95 ms, not 19 × 30 ms.
	if last < 90*time.Millisecond || last > 400*time.Millisecond {
		t.Fatalf("the last request started after %v, want about 95ms", last)
	}
	for i, s := range starts {
		if s.IsZero() {
			t.Fatalf("request %d never ran", i)
		}
	}
}

func TestPaceStopsWithTheContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	var ran atomic.Int64
	err := Pace(ctx, 100, 1000, func(ctx context.Context, i int) { ran.Add(1) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if n := ran.Load(); n == 0 || n > 10 {
		t.Fatalf("ran %d, want a few", n)
	}
}
