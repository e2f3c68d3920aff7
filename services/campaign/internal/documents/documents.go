// Package documents consumes the documents team's topic, documents.v1:
// it parses each record, sends what cannot be parsed to the dead-letter
// topic, and hands versioned upserts and tombstones to the use cases
// (app.Campaigns), which keep the read model and end every active campaign
// whose document's loan leaves BEHIND.
package documents

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
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
	Version  int64 `json:"version"`
	Borrower *struct {
		TimeZone string `json:"timeZone"`
		State    string `json:"state"`
	} `json:"borrower"`
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
	if b := w.Borrower; b != nil {
		doc.Borrower = campaign.Borrower{TimeZone: strings.TrimSpace(b.TimeZone), State: strings.ToUpper(strings.TrimSpace(b.State))}
	}
	return Update{ID: id, Doc: &doc}, nil
}

// Documents is what an update does to the read model and the campaigns
// on the document: the use cases (app.Campaigns).
type Documents interface {
	ApplyDocument(ctx context.Context, doc campaign.Document) error
	DeleteDocument(ctx context.Context, documentID string) error
}

// Consumer feeds documents.v1 to the use cases.
type Consumer struct {
	docs        Documents
	deadLetters *kafkax.DeadLetters
	received    *prometheus.CounterVec
}

// ConsumerConfig is what a Consumer needs.
type ConsumerConfig struct {
	// Documents applies each update.
	Documents Documents
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
		docs:        cfg.Documents,
		deadLetters: kafkax.NewDeadLetters(cfg.DeadLetter, received.WithLabelValues("malformed"), cfg.Logger),
		received:    received,
	}
}

// Handle parks the records of one partition's batch that cannot be
// parsed, then applies the others in order.
func (c *Consumer) Handle(ctx context.Context, _ string, _ int32, records []*kgo.Record) error {
	return kafkax.DecodeOrDeadLetter(ctx, records, Parse, c.applyAll, c.deadLetters)
}

// applyAll applies the updates of batch in order.
func (c *Consumer) applyAll(ctx context.Context, batch []kafkax.Decoded[Update]) ([]kafkax.Rejected, error) {
	for _, d := range batch {
		u := d.Value
		if err := c.apply(ctx, u); err != nil {
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

// apply applies one update, a new version or a tombstone.
func (c *Consumer) apply(ctx context.Context, u Update) error {
	if u.Doc == nil {
		return c.docs.DeleteDocument(ctx, u.ID)
	}
	return c.docs.ApplyDocument(ctx, *u.Doc)
}
