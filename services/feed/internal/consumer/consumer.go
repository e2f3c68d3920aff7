// Package consumer turns rcm.campaign-events.v1 into the stored activity
// history: it decodes each partition's batch, parks what cannot be
// decoded on the dead-letter topic, stores the items of each account once
// in its sequence, and then publishes every stored item to the internal
// activity topic from which every feed instance fans out live.
package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer produces records and waits for the broker's acknowledgement; a
// *kgo.Client is one.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// Consumer handles the event topic's batches.
type Consumer struct {
	store         *store.Store
	merged        *kafkax.Merger[store.Batch, []store.Appended]
	producer      Producer
	activityTopic string
	deadLetters   *kafkax.DeadLetters
	logger        *slog.Logger

	stored       prometheus.Counter
	replayed     prometheus.Counter
	deadLettered prometheus.Counter
}

// Config is what a Consumer needs.
type Config struct {
	// Store is where the items are stored.
	Store *store.Store
	// Producer publishes the stored items to ActivityTopic.
	Producer      Producer
	ActivityTopic string
	// DeadLetter parks a record that is not a valid event, with the
	// reason; it must succeed before the record counts as handled.
	DeadLetter kafkax.DeadLetterFunc
	Logger     *slog.Logger
}

// New returns a Consumer whose metrics are registered on reg.
func New(cfg Config, reg prometheus.Registerer) *Consumer {
	c := &Consumer{
		store:         cfg.Store,
		producer:      cfg.Producer,
		activityTopic: cfg.ActivityTopic,
		logger:        cfg.Logger,
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_items_stored_total", Help: "Activity items stored for the first time.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_items_replayed_total", Help: "Events delivered again whose item was already stored.",
		}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_dead_letters_total", Help: "Records that were not valid events, sent to the dead-letter topic.",
		}),
	}
	c.merged = kafkax.NewMerger(c.storeAndPublishAll)
	reg.MustRegister(c.stored, c.replayed, c.deadLettered)
	c.deadLetters = kafkax.NewDeadLetters(cfg.DeadLetter, c.deadLettered, cfg.Logger)
	return c
}

// accountItem is an item of an event and the event's account; skip marks
// an event of a type added after this consumer was built, which it
// ignores rather than parks.
type accountItem struct {
	account string
	item    activity.Item
	skip    bool
}

// decode reads the item of an event record.
func decode(r *kgo.Record) (accountItem, error) {
	e, err := kafkarec.Decode(r)
	if errors.Is(err, events.ErrUnknownType) {
		return accountItem{skip: true}, nil
	}
	if err != nil {
		return accountItem{}, err
	}
	it, err := activity.FromEvent(e)
	if errors.Is(err, events.ErrUnknownType) {
		return accountItem{skip: true}, nil
	}
	if err != nil {
		return accountItem{}, err
	}
	return accountItem{account: e.AccountID, item: it}, nil
}

// Handle is the kafkax.BatchHandler of one partition. It returns nil only
// once every malformed record is on the dead-letter topic, every valid
// event of records is stored and every stored item is published, so the
// offsets are committed only then. Running it again on the same
// records stores nothing twice and publishes the same items again, which
// the subscribers skip by cursor.
func (c *Consumer) Handle(ctx context.Context, _ string, _ int32, records []*kgo.Record) error {
	// Announced before decoding, so that the partitions of a fetch
	// handed over together make one write (see kafkax.Merger).
	write := c.merged.Expect()
	defer write.Withdraw()
	process := func(ctx context.Context, batch []kafkax.Decoded[accountItem]) ([]kafkax.Rejected, error) {
		return c.storeAndPublish(ctx, write, batch)
	}
	return kafkax.DecodeOrDeadLetter(ctx, records, decode, process, c.deadLetters)
}

// storeAndPublish stores the batch's items, each account's in offset
// order, and publishes every stored item: with the batches of other
// partitions handled meanwhile (see kafkax.Merger; write is this call's
// announcement), all accounts' in the same few commands and one produce
// call. It rejects nothing: whatever decodes is an item.
func (c *Consumer) storeAndPublish(ctx context.Context, write *kafkax.Expected[store.Batch, []store.Appended], batch []kafkax.Decoded[accountItem]) ([]kafkax.Rejected, error) {
	var (
		batches   []store.Batch
		byAccount = map[string]int{}
		seen      = map[string]bool{}
	)
	for _, d := range batch {
		ai := d.Value
		if ai.skip {
			continue
		}
		if seen[ai.item.ID] {
			// The producer sent it twice; it is stored once either way,
			// and a batch without repeats keeps seqlog on its fast path.
			continue
		}
		seen[ai.item.ID] = true
		b, ok := byAccount[ai.account]
		if !ok {
			b = len(batches)
			byAccount[ai.account] = b
			batches = append(batches, store.Batch{Account: ai.account})
		}
		batches[b].Items = append(batches[b].Items, ai.item)
	}
	if len(batches) == 0 {
		return nil, nil
	}
	if _, err := write.Write(ctx, batches); err != nil {
		return nil, err
	}
	return nil, nil
}

// storeAndPublishAll is the kafkax.Merger's write: it stores batches, of
// several partitions, and publishes every stored item in one produce
// call, so that the partitions handled together cost one round trip to
// the broker, not one each one after another. A failed produce fails
// every partition of the write, which each retries: what was stored is
// then published again at the same cursors.
func (c *Consumer) storeAndPublishAll(ctx context.Context, batches []store.Batch) ([][]store.Appended, error) {
	results, err := c.store.AppendBatches(ctx, batches)
	if err != nil {
		return nil, err
	}
	var out []*kgo.Record
	for i, b := range batches {
		recs, err := c.records(b, results[i])
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	if len(out) > 0 {
		if err := c.producer.ProduceSync(ctx, out...).FirstErr(); err != nil {
			return nil, fmt.Errorf("publish %d activity items: %w", len(out), err)
		}
	}
	return results, nil
}

// records returns the activity records of b's stored items whose place
// is known.
func (c *Consumer) records(b store.Batch, results []store.Appended) ([]*kgo.Record, error) {
	out := make([]*kgo.Record, 0, len(results))
	for i, res := range results {
		it := b.Items[i]
		if res.Replay {
			c.replayed.Inc()
		} else {
			c.stored.Inc()
		}
		if res.Seq == 0 {
			// Stored long ago, too far back to find cheaply: its
			// subscribers had it then, and history serves it.
			c.logger.Info("replayed event not republished", slog.String("event_id", it.ID), slog.String("account_id", b.Account))
			continue
		}
		it.Seq = res.Seq
		value, err := json.Marshal(it)
		if err != nil {
			return nil, fmt.Errorf("encode item %s: %w", it.ID, err)
		}
		out = append(out, &kgo.Record{Topic: c.activityTopic, Key: []byte(b.Account), Value: value})
		c.logger.Debug("activity item stored", slog.String("event_id", it.ID), slog.String("account_id", b.Account),
			slog.Int64("seq", it.Seq), slog.Bool("replay", res.Replay))
	}
	return out, nil
}
