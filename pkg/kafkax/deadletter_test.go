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

// TestDecodeOrDeadLetter: what does not decode and what process rejects
// is parked after process succeeds, in offset order, counted; nothing is
// parked when process fails, and a park that fails fails the batch.
func TestDecodeOrDeadLetter(t *testing.T) {
	t.Parallel()
	// Values are numbers; "x" does not decode, and process rejects 13.
	decode := func(r *kgo.Record) (int, error) { return strconv.Atoi(string(r.Value)) }
	var processed []int
	var failProcess error
	process := func(_ context.Context, batch []kafkax.Decoded[int]) ([]kafkax.Rejected, error) {
		if failProcess != nil {
			return nil, failProcess
		}
		var out []kafkax.Rejected
		for _, d := range batch {
			if d.Value == 13 {
				out = append(out, kafkax.Rejected{Record: d.Record, Reason: errors.New("unlucky")})
				continue
			}
			processed = append(processed, d.Value)
		}
		return out, nil
	}
	var parkedOffsets []int64
	var failPark error
	park := func(_ context.Context, r *kgo.Record, _ error) error {
		if failPark != nil {
			return failPark
		}
		parkedOffsets = append(parkedOffsets, r.Offset)
		return nil
	}
	counted := prometheus.NewCounter(prometheus.CounterOpts{Name: "parked_total", Help: "parked"})
	dl := kafkax.NewDeadLetters(park, counted, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var records []*kgo.Record
	for i, v := range []string{"1", "13", "x", "2", "x"} {
		records = append(records, &kgo.Record{Value: []byte(v), Offset: int64(i)})
	}
	ctx := context.Background()

	failProcess = errors.New("store down")
	if err := kafkax.DecodeOrDeadLetter(ctx, records, decode, process, dl); !errors.Is(err, failProcess) {
		t.Fatalf("process failing: got %v, want its error", err)
	}
	if len(parkedOffsets) != 0 {
		t.Fatalf("process failing: parked %v, want nothing", parkedOffsets)
	}
	failProcess, failPark = nil, errors.New("broker down")
	if err := kafkax.DecodeOrDeadLetter(ctx, records, decode, process, dl); !errors.Is(err, failPark) {
		t.Fatalf("park failing: got %v, want its error", err)
	}
	failPark, processed = nil, nil
	if err := kafkax.DecodeOrDeadLetter(ctx, records, decode, process, dl); err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2}; !slices.Equal(processed, want) {
		t.Fatalf("processed %v, want %v", processed, want)
	}
	if want := []int64{1, 2, 4}; !slices.Equal(parkedOffsets, want) {
		t.Fatalf("parked offsets %v, want %v", parkedOffsets, want)
	}
	if got := testutil.ToFloat64(counted); got != 3 {
		t.Fatalf("counted %v, want 3", got)
	}
}
