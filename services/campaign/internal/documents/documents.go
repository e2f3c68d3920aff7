// Package documents maintains the campaign service's read model of the
// documents team's topic, documents.v1: versioned upserts and tombstones,
// and the end of every active campaign whose document's loan leaves BEHIND.
package documents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Update is one message of documents.v1: a document's new state, or its
// deletion when Doc is nil (a tombstone).
type Update struct {
	ID  string
	Doc *campaign.Document
}

// wire is the JSON value of a documents.v1 message.
type wire struct {
	ID        string `json:"id"`
	AccountID string `json:"accountId"`
	Loan      *struct {
		Status string `json:"status"`
	} `json:"loan"`
	Version int64 `json:"version"`
}

// Parse decodes a documents.v1 record. A value that does not match the
// schema, or whose id is not the key, wraps events.ErrMalformed.
func Parse(r *kgo.Record) (Update, error) {
	id := string(r.Key)
	if id == "" {
		return Update{}, fmt.Errorf("%w: record has no key", events.ErrMalformed)
	}
	if r.Value == nil {
		return Update{ID: id}, nil
	}
	if err := events.Validate(events.SchemaDocument, r.Value); err != nil {
		return Update{}, err
	}
	var w wire
	if err := json.Unmarshal(r.Value, &w); err != nil {
		return Update{}, fmt.Errorf("%w: %v", events.ErrMalformed, err)
	}
	if w.ID != id {
		return Update{}, fmt.Errorf("%w: value id %q is not the key %q", events.ErrMalformed, w.ID, id)
	}
	doc := campaign.Document{ID: w.ID, AccountID: w.AccountID, Version: w.Version}
	if w.Loan != nil {
		doc.Loan = &campaign.Loan{Status: w.Loan.Status}
	}
	return Update{ID: id, Doc: &doc}, nil
}

// Enqueuer takes freshly written events for publishing.
type Enqueuer interface {
	Enqueue(campaignID string, msgs ...events.Message)
}

// Applier applies document updates and ends the campaigns they end.
type Applier struct {
	store  *store.Store
	relay  Enqueuer
	newID  func(prefix string) string
	now    func() time.Time
	logger *slog.Logger
	ended  prometheus.Counter
}

// NewApplier returns an Applier.
func NewApplier(s *store.Store, relay Enqueuer, newID func(string) string, now func() time.Time, reg prometheus.Registerer, logger *slog.Logger) *Applier {
	ended := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rcm_campaigns_ended_total", Help: "Campaigns ended because their document's loan left BEHIND.",
	})
	reg.MustRegister(ended)
	return &Applier{store: s, relay: relay, newID: newID, now: now, logger: logger, ended: ended}
}

// Apply stores u if it is newer than what is held, then ends the active
// campaigns of the document if it no longer allows them. The second step
// runs from the stored state whether or not u changed it, so a crash
// between the two is repaired when u is delivered again.
func (a *Applier) Apply(ctx context.Context, u Update) error {
	var err error
	if u.Doc == nil {
		_, err = a.store.DeleteDocument(ctx, u.ID, a.now())
	} else {
		_, err = a.store.ApplyDocument(ctx, *u.Doc, a.now())
	}
	if err != nil {
		return err
	}
	doc, err := a.store.AnyDocument(ctx, u.ID)
	if errors.Is(err, campaign.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if doc.AllowsCampaign() {
		return nil
	}
	active, err := a.store.ActiveOnDocument(ctx, doc.ID)
	if err != nil {
		return err
	}
	for _, c := range active {
		if _, err := a.EndIfLoanLeft(ctx, c.AccountID, c.ID, doc); err != nil {
			return err
		}
	}
	return nil
}

// EndIfLoanLeft ends the campaign if doc no longer allows it, in one write
// with its campaign_ended event, and hands the event to the relay. It
// returns the campaign as stored afterwards.
func (a *Applier) EndIfLoanLeft(ctx context.Context, accountID, campaignID string, doc campaign.Document) (campaign.Campaign, error) {
	c, msgs, err := a.store.Update(ctx, accountID, campaignID, func(c *campaign.Campaign) ([]events.Event, error) {
		e, ended := c.EndIfLoanLeft(doc, a.newID("evt_"), a.now())
		if !ended {
			return nil, nil
		}
		return []events.Event{e}, nil
	})
	if err != nil {
		return c, fmt.Errorf("end campaign %s: %w", campaignID, err)
	}
	if len(msgs) > 0 {
		a.ended.Inc()
		a.relay.Enqueue(campaignID, msgs...)
		a.logger.Info("campaign ended", slog.String("campaign_id", campaignID), slog.String("event_id", msgs[0].ID), slog.String("document_id", doc.ID))
	}
	return c, nil
}

// Consumer feeds documents.v1 to an Applier.
type Consumer struct {
	applyUpdate func(ctx context.Context, u Update) error
	deadLetters *kafkax.DeadLetters
	received    *prometheus.CounterVec
}

// ConsumerConfig is what a Consumer needs.
type ConsumerConfig struct {
	// Applier applies each update; an *Applier is one.
	Applier interface {
		Apply(ctx context.Context, u Update) error
	}
	// DeadLetter parks the records that cannot be parsed, with the
	// reason; it must succeed before the record counts as handled.
	DeadLetter kafkax.DeadLetterFunc
	Logger     *slog.Logger
}

// NewConsumer returns a Consumer whose metrics are registered on reg.
func NewConsumer(cfg ConsumerConfig, reg prometheus.Registerer) *Consumer {
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rcm_documents_messages_total", Help: "documents.v1 messages handled, by outcome (applied, tombstone, malformed).",
	}, []string{"outcome"})
	reg.MustRegister(received)
	// Every outcome exists from the start, so a rate of the first
	// malformed message can be seen.
	for _, o := range []string{"applied", "tombstone", "malformed"} {
		received.WithLabelValues(o)
	}
	return &Consumer{
		applyUpdate: cfg.Applier.Apply,
		deadLetters: kafkax.NewDeadLetters(cfg.DeadLetter, received.WithLabelValues("malformed"), cfg.Logger),
		received:    received,
	}
}

// Handle applies one partition's batch in order, then parks the records
// that cannot be parsed.
func (c *Consumer) Handle(ctx context.Context, _ string, _ int32, records []*kgo.Record) error {
	return kafkax.DecodeOrDeadLetter(ctx, records, Parse, c.apply, c.deadLetters)
}

func (c *Consumer) apply(ctx context.Context, batch []kafkax.Decoded[Update]) ([]kafkax.Rejected, error) {
	for _, d := range batch {
		u := d.Value
		if err := c.applyUpdate(ctx, u); err != nil {
			return nil, fmt.Errorf("apply document %s at offset %d: %w", u.ID, d.Record.Offset, err)
		}
		if u.Doc == nil {
			c.received.WithLabelValues("tombstone").Inc()
		} else {
			c.received.WithLabelValues("applied").Inc()
		}
	}
	return nil, nil
}
