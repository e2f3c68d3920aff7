// Package consumer turns rcm.campaign-events.v1 into compliance log
// entries: it decodes and validates each record, parks what cannot be used
// on the dead-letter topic, and appends the rest per account, in partition
// order, before the poll loop commits the offsets.
package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
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
			Name: "rcm_compliance_dead_letters_total", Help: "Records sent to the dead-letter topic because they could not be parsed or validated.",
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
// event is recorded (or parked on the dead-letter topic).
func (c *Consumer) Handle(ctx context.Context, _ string, _ int32, records []*kgo.Record) error {
	start := c.now()
	var order []string
	byAccount := map[string][]ledger.Event{}
	for _, r := range records {
		e, err := events.Decode(r)
		if err != nil {
			if derr := c.dlq(ctx, r, err); derr != nil {
				return derr
			}
			c.m.deadLetter.Inc()
			c.logger.Warn("unusable event sent to the dead-letter topic",
				slog.Int("partition", int(r.Partition)), slog.Int64("offset", r.Offset), slog.String("reason", err.Error()))
			continue
		}
		if _, ok := byAccount[e.AccountID]; !ok {
			order = append(order, e.AccountID)
		}
		byAccount[e.AccountID] = append(byAccount[e.AccountID], ledger.Event{Event: e, Data: r.Value})
	}
	for _, account := range order {
		evs := byAccount[account]
		res, err := c.ledger.Append(ctx, account, evs)
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
	}
	c.m.batch.Observe(c.now().Sub(start).Seconds())
	return nil
}
