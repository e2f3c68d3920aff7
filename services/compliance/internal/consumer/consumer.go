// Package consumer turns rcm.campaign-events.v1 into compliance log
// entries: it decodes and validates each record, parks what cannot be used
// (not a valid event, or an event the log cannot hold) on the dead-letter
// topic with the reason, and appends the rest per account, in partition
// order, before the poll loop commits the offsets. Only a failure that a
// retry may cure is returned to the poll loop.
package consumer

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Appender is the ledger side of the consumer.
type Appender interface {
	AppendBatches(ctx context.Context, batches []ledger.Batch) ([][]ledger.Appended, error)
}

// Config is what a Consumer needs.
type Config struct {
	// Ledger is where the events are appended.
	Ledger Appender
	// DeadLetter parks what can never be an entry, with the reason.
	DeadLetter kafkax.DeadLetterFunc
	// Now is the clock of the metrics (time.Now when nil).
	Now    func() time.Time
	Logger *slog.Logger
	// Appended, when set, is told of each account the consumer durably
	// appended to (the checkpoint signer).
	Appended func(account string)
}

// Consumer handles the batches of one consumer group member.
type Consumer struct {
	ledger      Appender
	deadLetters *kafkax.DeadLetters
	logger      *slog.Logger
	now         func() time.Time
	appended    func(account string)
	merged      *kafkax.Merger[kafkax.Decoded[event], error]
	m           *metrics
}

type metrics struct {
	appends    *prometheus.CounterVec
	replays    prometheus.Counter
	deadLetter prometheus.Counter
	batch      prometheus.Histogram
	latency    prometheus.Histogram
}

// New returns a Consumer whose metrics are registered on reg.
func New(cfg Config, reg prometheus.Registerer) *Consumer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &metrics{
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rcm_compliance_appends_total", Help: "Entries appended to the compliance log, by event type.",
		}, []string{"event_type"}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_compliance_replays_total", Help: "Events delivered again and found already recorded.",
		}),
		deadLetter: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_compliance_dead_letters_total", Help: "Records sent to the dead-letter topic: not valid events, or events the log can never hold.",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rcm_compliance_append_batch_duration_seconds", Help: "Time to durably append one partition batch.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rcm_compliance_event_to_appended_seconds", Help: "Time from an event's occurredAt until its entry was durably written.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	reg.MustRegister(m.appends, m.replays, m.deadLetter, m.batch, m.latency)
	for _, t := range []string{events.TypeCampaignStarted, events.TypeOptOut, events.TypeCampaignEnded} {
		m.appends.WithLabelValues(t)
	}
	c := &Consumer{
		ledger: cfg.Ledger, deadLetters: kafkax.NewDeadLetters(cfg.DeadLetter, m.deadLetter, cfg.Logger),
		logger: cfg.Logger, now: cfg.Now, appended: cfg.Appended, m: m,
	}
	c.merged = kafkax.NewMerger(c.appendAll)
	return c
}

// Handle appends one partition's batch. It returns nil only when every
// event is recorded or parked on the dead-letter topic with its reason:
// a record that is not a valid event, or an event the log can never hold
// (ledger.UnappendableError), is parked, and the batch goes on without it.
// An error is a failure that a retry may cure (the store or the broker did
// not answer); nothing is committed past it.
//
// Handle may be called for several partitions at the same time
// (kafkax.PartitionsAtOnce): each decodes and validates its records on a
// core of its own, and the events of the partitions that are ready while
// a write is under way go to the store together in the next one (see
// kafkax.Merger).
func (c *Consumer) Handle(ctx context.Context, _ string, _ int32, records []*kgo.Record) error {
	return c.write(ctx, records, prepare(records))
}

// Stages is Handle in two stages, for kafkax.ConsumeStaged: Prepare
// decodes and validates a batch's records and puts their data in RFC 8785
// form, on every core at once, while the fetch before is written; Write
// parks and appends as Handle does. What Prepare makes depends on the
// records only (kafkarec.Decode and auditlog.Canonical are pure functions
// of a record's headers, key and value), never on the log: the seq and
// the chain of each entry are found by the write.
func (c *Consumer) Stages() kafkax.Stages {
	return kafkax.Stages{
		Prepare: func(_ string, _ int32, records []*kgo.Record) any { return prepare(records) },
		Write: func(ctx context.Context, _ string, _ int32, records []*kgo.Record, p any) error {
			return c.write(ctx, records, p.(prepared))
		},
	}
}

// write parks what did not decode and appends the rest (see Handle).
func (c *Consumer) write(ctx context.Context, records []*kgo.Record, p prepared) error {
	start := c.now()
	decode := func(r *kgo.Record) (event, error) {
		d := p[r]
		return d.event, d.err
	}
	if err := kafkax.DecodeOrDeadLetter(ctx, records, decode, c.appendMerged, c.deadLetters); err != nil {
		return err
	}
	c.m.batch.Observe(c.now().Sub(start).Seconds())
	return nil
}

// event is a decoded event with its data in RFC 8785 form (nil when it
// has none: its entry then fails to build, and it is parked).
type event struct {
	events.Event
	canonical []byte
}

// decoding is what kafkarec.Decode made of a record.
type decoding struct {
	event event
	err   error
}

// prepared is what prepare made of a batch, by record; it is only read
// once made.
type prepared map[*kgo.Record]decoding

// prepare decodes and validates records, and puts the data of those that
// decode in RFC 8785 form, on every core but one (prepareWorkers): the
// costliest steps of a batch before its entries are built, and ones that
// depend on nothing but the record (kafkarec.Decode and auditlog.Canonical
// are pure functions of it, the schemas compiled once and safe to share).
func prepare(records []*kgo.Record) prepared {
	out := make([]decoding, len(records))
	workers := prepareWorkers(len(records), runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(records); i += workers {
				out[i].event.Event, out[i].err = kafkarec.Decode(records[i])
				if out[i].err == nil {
					out[i].event.canonical, _ = auditlog.Canonical(records[i].Value)
				}
			}
		})
	}
	wg.Wait()
	m := make(prepared, len(records))
	for i, r := range records {
		m[r] = out[i]
	}
	return m
}

// decodeAtLeast is how many records a decoding goroutine is worth.
const decodeAtLeast = 16

// prepareWorkers is how many goroutines prepare a batch of n records on
// procs cores: one per decodeAtLeast records, on every core but one. A
// batch is prepared while the fetch before it is written, and that write
// is what the batch waits for: it builds and sends the entries one insert
// after another, and the store works on each. Prepared on every core, a
// fetch of 1,000 records took the cores from both for the 20–30 ms it
// lasted (measured in the compliance benchmark, on 2 cores: the inserts
// sent meanwhile took 12–18 ms, against 5–6 ms otherwise), and the write
// waited longer than the preparation saved.
func prepareWorkers(n, procs int) int {
	return max(1, min(procs-1, (n+decodeAtLeast-1)/decodeAtLeast))
}

// appendMerged appends batch in one write with the batches of the other
// partitions handled meanwhile (kafkax.Merger), and returns its records
// that the log can never hold, left out. The write appends one account's
// events at a time in this process, whichever partitions they came in.
func (c *Consumer) appendMerged(ctx context.Context, batch []kafkax.Decoded[event]) ([]kafkax.Rejected, error) {
	reasons, err := c.merged.Write(ctx, batch)
	if err != nil {
		return nil, err
	}
	var rejected []kafkax.Rejected
	for i, reason := range reasons {
		if reason != nil {
			rejected = append(rejected, kafkax.Rejected{Record: batch[i].Record, Reason: reason})
		}
	}
	return rejected, nil
}

// appendAll appends the events of batch per account, each account's in
// the order of batch, all accounts together (ledger.AppendBatches: a few
// store commands for the whole fetch), and returns for each event why
// the log can never hold it (it is left out), or nil.
func (c *Consumer) appendAll(ctx context.Context, batch []kafkax.Decoded[event]) ([]error, error) {
	var order []string
	byAccount := map[string][]kafkax.Decoded[event]{}
	for _, d := range batch {
		account := d.Value.AccountID
		if _, ok := byAccount[account]; !ok {
			order = append(order, account)
		}
		byAccount[account] = append(byAccount[account], d)
	}
	reasons := make([]error, len(batch))
	at := make(map[*kgo.Record]int, len(batch))
	for i, d := range batch {
		at[d.Record] = i
	}
	for {
		batches := make([]ledger.Batch, 0, len(order))
		for _, account := range order {
			ps := byAccount[account]
			evs := make([]ledger.Event, len(ps))
			for i, p := range ps {
				evs[i] = ledger.Event{Event: p.Value.Event, Data: p.Record.Value, Canonical: p.Value.canonical}
			}
			batches = append(batches, ledger.Batch{Account: account, Events: evs})
		}
		res, err := c.ledger.AppendBatches(ctx, batches)
		var unappendable *ledger.UnappendableError
		if errors.As(err, &unappendable) {
			// Leave it out and append the rest again: what was written
			// before it is found a replay.
			found := false
			for a, account := range order {
				ps := byAccount[account]
				i := slices.IndexFunc(ps, func(p kafkax.Decoded[event]) bool { return p.Value.EventID == unappendable.EventID })
				if i < 0 {
					continue
				}
				found = true
				reasons[at[ps[i].Record]] = unappendable
				byAccount[account] = slices.Delete(slices.Clone(ps), i, i+1)
				if len(byAccount[account]) == 0 {
					order = slices.Delete(order, a, a+1)
				}
				break
			}
			if !found {
				return nil, err
			}
			if len(order) == 0 {
				return reasons, nil
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		for b, batch := range batches {
			c.record(batch.Account, batch.Events, res[b])
		}
		return reasons, nil
	}
}

// record counts what one account's append did and tells the signer.
func (c *Consumer) record(account string, evs []ledger.Event, res []ledger.Appended) {
	now := c.now()
	grew := false
	for i, r := range res {
		if r.Replay {
			c.m.replays.Inc()
			continue
		}
		grew = true
		e := evs[i]
		c.m.appends.WithLabelValues(e.EventType).Inc()
		if at, err := e.Time(); err == nil {
			c.m.latency.Observe(now.Sub(at).Seconds())
		}
		c.logger.Debug("appended", slog.String("event_id", e.EventID), slog.String("account_id", account), slog.Int64("seq", r.Seq))
	}
	if grew && c.appended != nil {
		c.appended(account)
	}
}
