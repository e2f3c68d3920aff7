package kafkax_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestDecodeOrDeadLetter: what does not decode is parked before anything
// is processed, what process rejects after it; a park that fails stops
// the batch before process runs; a batch retried after a failure parks
// nothing twice, and the next batch parks its own.
func TestDecodeOrDeadLetter(t *testing.T) {
	t.Parallel()
	// Values are numbers; "x" does not decode, and process rejects 13.
	decode := func(r *kgo.Record) (int, error) { return strconv.Atoi(string(r.Value)) }
	var processed []int
	var failProcess error
	process := func(_ context.Context, batch []kafkax.Decoded[int]) ([]kafkax.Rejected, error) {
		processed = nil
		for _, d := range batch {
			processed = append(processed, d.Value)
		}
		if failProcess != nil {
			return nil, failProcess
		}
		var out []kafkax.Rejected
		for _, d := range batch {
			if d.Value == 13 {
				out = append(out, kafkax.Rejected{Record: d.Record, Reason: errors.New("unlucky")})
			}
		}
		return out, nil
	}
	var parked []int64
	var failPark error
	park := func(_ context.Context, r *kgo.Record, _ error) error {
		if failPark != nil {
			return failPark
		}
		parked = append(parked, r.Offset)
		return nil
	}
	counted := prometheus.NewCounter(prometheus.CounterOpts{Name: "parked_total", Help: "parked"})
	dl := kafkax.NewDeadLetters(park, counted, slog.New(slog.NewTextHandler(io.Discard, nil)))
	batch := func(first int64, values ...string) []*kgo.Record {
		var rs []*kgo.Record
		for i, v := range values {
			rs = append(rs, &kgo.Record{Topic: "t", Partition: 2, Value: []byte(v), Offset: first + int64(i)})
		}
		return rs
	}
	records := batch(10, "x", "1", "13", "x", "2")
	ctx := context.Background()

	failPark = errors.New("broker down")
	if err := kafkax.DecodeOrDeadLetter(ctx, records, decode, process, dl); !errors.Is(err, failPark) {
		t.Fatalf("park failing: got %v, want its error", err)
	}
	if processed != nil {
		t.Fatalf("park failing: processed %v, want nothing before the malformed records are parked", processed)
	}
	failPark, failProcess = nil, errors.New("store down")
	if err := kafkax.DecodeOrDeadLetter(ctx, records, decode, process, dl); !errors.Is(err, failProcess) {
		t.Fatalf("process failing: got %v, want its error", err)
	}
	if want := []int64{10, 13}; !slices.Equal(parked, want) {
		t.Fatalf("process failing: parked %v, want %v", parked, want)
	}
	failProcess = nil
	for range 2 {
		if err := kafkax.DecodeOrDeadLetter(ctx, records, decode, process, dl); err != nil {
			t.Fatal(err)
		}
	}
	if want := []int{1, 13, 2}; !slices.Equal(processed, want) {
		t.Fatalf("processed %v, want %v", processed, want)
	}
	if want := []int64{10, 13, 12}; !slices.Equal(parked, want) {
		t.Fatalf("after retries: parked %v, want %v, each once", parked, want)
	}
	if err := kafkax.DecodeOrDeadLetter(ctx, batch(15, "x", "3"), decode, process, dl); err != nil {
		t.Fatal(err)
	}
	if want := []int64{10, 13, 12, 15}; !slices.Equal(parked, want) {
		t.Fatalf("next batch: parked %v, want %v", parked, want)
	}
	if got := testutil.ToFloat64(counted); got != 4 {
		t.Fatalf("counted %v, want 4", got)
	}
}
