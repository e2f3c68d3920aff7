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
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Appender is the ledger side of the consumer.
type Appender interface {
	Append(ctx context.Context, account string, evs []ledger.Event) ([]ledger.Appended, error)
}

// Consumer handles the batches of one consumer group member.
type Consumer struct {
	ledger Appender
	dlq    func(ctx context.Context, r *kgo.Record, reason error) error
	logger *slog.Logger
	now    func() time.Time
	m      *metrics
}

type metrics struct {
	appends    *prometheus.CounterVec
	replays    prometheus.Counter
	deadLetter prometheus.Counter
	batch      prometheus.Histogram
	latency    prometheus.Histogram
}

// New returns a Consumer appending to l.
func New(l Appender, dlq func(ctx context.Context, r *kgo.Record, reason error) error, reg prometheus.Registerer, logger *slog.Logger, now func() time.Time) *Consumer {
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
	return &Consumer{ledger: l, dlq: dlq, logger: logger, now: now, m: m}
}

// Handle appends one partition's batch. It returns nil only when every
// event is recorded or parked on the dead-letter topic with its reason:
// a record that is not a valid event, or an event the log can never hold
// (ledger.UnappendableError), is parked, and the batch goes on without it.
// An error is a failure that a retry may cure (the store or the broker did
// not answer); nothing is committed past it.
func (c *Consumer) Handle(ctx context.Context, _ string, _ int32, records []*kgo.Record) error {
	start := c.now()
	var order []string
	byAccount := map[string][]pending{}
	for _, r := range records {
		e, err := kafkarec.Decode(r)
		if err != nil {
			if err := c.deadLetter(ctx, r, "", err); err != nil {
				return err
			}
			continue
		}
		if _, ok := byAccount[e.AccountID]; !ok {
			order = append(order, e.AccountID)
		}
		byAccount[e.AccountID] = append(byAccount[e.AccountID], pending{ledger.Event{Event: e, Data: r.Value}, r})
	}
	for _, account := range order {
		if err := c.append(ctx, account, byAccount[account]); err != nil {
			return err
		}
	}
	c.m.batch.Observe(c.now().Sub(start).Seconds())
	return nil
}

// pending is an event to append and the record it came in.
type pending struct {
	ev     ledger.Event
	record *kgo.Record
}

// append appends ps, all of account, parking each event the log can never
// hold and appending the others.
func (c *Consumer) append(ctx context.Context, account string, ps []pending) error {
	for len(ps) > 0 {
		evs := make([]ledger.Event, len(ps))
		for i, p := range ps {
			evs[i] = p.ev
		}
		res, err := c.ledger.Append(ctx, account, evs)
		var unappendable *ledger.UnappendableError
		if errors.As(err, &unappendable) {
			i := slices.IndexFunc(ps, func(p pending) bool { return p.ev.EventID == unappendable.EventID })
			if i < 0 {
				return err
			}
			if err := c.deadLetter(ctx, ps[i].record, ps[i].ev.EventID, unappendable); err != nil {
				return err
			}
			ps = slices.Delete(slices.Clone(ps), i, i+1)
			continue
		}
		if err != nil {
			return err
		}
		now := c.now()
		for i, r := range res {
			if r.Replay {
				c.m.replays.Inc()
				continue
			}
			e := evs[i]
			c.m.appends.WithLabelValues(e.EventType).Inc()
			if at, err := e.Time(); err == nil {
				c.m.latency.Observe(now.Sub(at).Seconds())
			}
			c.logger.Debug("appended", slog.String("event_id", e.EventID), slog.String("account_id", account), slog.Int64("seq", r.Seq))
		}
		return nil
	}
	return nil
}

// deadLetter parks r on the dead-letter topic with reason, counts and logs
// it; an error means it is not parked yet.
func (c *Consumer) deadLetter(ctx context.Context, r *kgo.Record, eventID string, reason error) error {
	if err := c.dlq(ctx, r, reason); err != nil {
		return err
	}
	c.m.deadLetter.Inc()
	c.logger.Warn("event sent to the dead-letter topic", slog.String("event_id", eventID),
		slog.Int("partition", int(r.Partition)), slog.Int64("offset", r.Offset), slog.String("reason", reason.Error()))
	return nil
}
