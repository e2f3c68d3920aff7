// Package consumer turns rcm.campaign-events.v1 into the stored activity
// history: it decodes each partition's batch, stores the items of each
// account once in its sequence, parks what cannot be decoded on the
// dead-letter topic, and then publishes every stored item to the internal
// activity topic from which every feed instance fans out live.
package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer produces records and waits for the broker's acknowledgement; a
// *kgo.Client is one.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// Consumer handles the event topic's batches.
type Consumer struct {
	log           *seqlog.Log
	producer      Producer
	activityTopic string
	deadLetter    func(ctx context.Context, r *kgo.Record, reason error) error
	now           func() time.Time
	logger        *slog.Logger

	stored      prometheus.Counter
	replayed    prometheus.Counter
	deadLetters prometheus.Counter
}

// Config is what a Consumer needs.
type Config struct {
	// Log is the items' sequence store.
	Log *seqlog.Log
	// Producer publishes the stored items to ActivityTopic.
	Producer      Producer
	ActivityTopic string
	// DeadLetter parks a record that is not a valid event, with the
	// reason; it must succeed before the record counts as handled.
	DeadLetter func(ctx context.Context, r *kgo.Record, reason error) error
	Now        func() time.Time
	Logger     *slog.Logger
}

// New returns a Consumer whose metrics are registered on reg.
func New(cfg Config, reg prometheus.Registerer) *Consumer {
	c := &Consumer{
		log:           cfg.Log,
		producer:      cfg.Producer,
		activityTopic: cfg.ActivityTopic,
		deadLetter:    cfg.DeadLetter,
		now:           cfg.Now,
		logger:        cfg.Logger,
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_items_stored_total", Help: "Activity items stored for the first time.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_items_replayed_total", Help: "Events delivered again whose item was already stored.",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_dead_letters_total", Help: "Records that were not valid events, sent to the dead-letter topic.",
		}),
	}
	reg.MustRegister(c.stored, c.replayed, c.deadLetters)
	return c
}

// accountBatch is one account's items of a batch, in offset order.
type accountBatch struct {
	account string
	items   []activity.Item
}

type malformed struct {
	record *kgo.Record
	reason error
}

// Handle is the kafkax.BatchHandler of one partition. It returns nil only
// once every valid event of records is stored, every malformed record is
// on the dead-letter topic, and every stored item is published, so the
// offsets are committed only then. Running it again on the same records
// stores nothing twice and publishes the same items again, which the
// subscribers skip by cursor.
func (c *Consumer) Handle(ctx context.Context, _ string, _ int32, records []*kgo.Record) error {
	var (
		batches   []*accountBatch
		byAccount = map[string]*accountBatch{}
		seen      = map[string]bool{}
		bad       []malformed
	)
	for _, r := range records {
		e, err := kafkarec.Decode(r)
		var it activity.Item
		if err == nil {
			it, err = activity.FromEvent(e)
		}
		if err != nil {
			bad = append(bad, malformed{r, err})
			continue
		}
		if seen[e.EventID] {
			// The producer sent it twice; it is stored once either way,
			// and a batch without repeats keeps seqlog on its fast path.
			continue
		}
		seen[e.EventID] = true
		b := byAccount[e.AccountID]
		if b == nil {
			b = &accountBatch{account: e.AccountID}
			byAccount[e.AccountID] = b
			batches = append(batches, b)
		}
		b.items = append(b.items, it)
	}

	var out []*kgo.Record
	for _, b := range batches {
		recs, err := c.store(ctx, b)
		if err != nil {
			return err
		}
		out = append(out, recs...)
	}
	for _, m := range bad {
		if err := c.deadLetter(ctx, m.record, m.reason); err != nil {
			return err
		}
		c.deadLetters.Inc()
		c.logger.Warn("malformed event sent to the dead-letter topic",
			slog.String("topic", m.record.Topic), slog.Int("partition", int(m.record.Partition)),
			slog.Int64("offset", m.record.Offset), slog.Any("reason", m.reason))
	}
	if len(out) > 0 {
		if err := c.producer.ProduceSync(ctx, out...).FirstErr(); err != nil {
			return fmt.Errorf("publish %d activity items: %w", len(out), err)
		}
	}
	return nil
}

// store appends b's items to the account's sequence and returns the
// activity records of every item whose place is known.
func (c *Consumer) store(ctx context.Context, b *accountBatch) ([]*kgo.Record, error) {
	now := c.now().UTC()
	items := make([]seqlog.Item, len(b.items))
	for i, it := range b.items {
		items[i] = seqlog.Item{EventID: it.ID, Build: func(seq int64, _ string) (any, string, error) {
			it.Seq = seq
			return activity.Record{Key: seqlog.Key(b.account, seq), AccountID: b.account, Item: it, StoredAt: now}, "", nil
		}}
	}
	results, err := c.log.Append(ctx, b.account, "", items)
	if err != nil {
		return nil, fmt.Errorf("store %d items of %s: %w", len(items), b.account, err)
	}
	out := make([]*kgo.Record, 0, len(results))
	for i, res := range results {
		it := b.items[i]
		if res.Replay {
			c.replayed.Inc()
		} else {
			c.stored.Inc()
		}
		if res.Seq == 0 {
			// Stored long ago, too far back to find cheaply: its
			// subscribers had it then, and history serves it.
			c.logger.Info("replayed event not republished", slog.String("event_id", it.ID), slog.String("account_id", b.account))
			continue
		}
		it.Seq = res.Seq
		value, err := json.Marshal(it)
		if err != nil {
			return nil, fmt.Errorf("encode item %s: %w", it.ID, err)
		}
		out = append(out, &kgo.Record{Topic: c.activityTopic, Key: []byte(b.account), Value: value})
		c.logger.Debug("activity item stored", slog.String("event_id", it.ID), slog.String("account_id", b.account),
			slog.Int64("seq", it.Seq), slog.Bool("replay", res.Replay))
	}
	return out, nil
}
