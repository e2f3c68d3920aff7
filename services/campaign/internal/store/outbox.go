package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Pending is an outbox event and the record that holds it.
type Pending struct {
	// DocumentID is the record whose outbox holds the event.
	DocumentID string
	// CampaignID is the event's campaign, "" for an event of no campaign.
	CampaignID string
	events.Message
}

// Pending returns every event still in an outbox, oldest event id first.
func (s *Store) Pending(ctx context.Context) ([]Pending, error) {
	cur, err := s.documents.Find(ctx,
		bson.D{{Key: "outbox.0", Value: bson.D{{Key: "$exists", Value: true}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "outbox", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("scan outboxes: %w", mongox.Classify(err))
	}
	var docs []documentDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("scan outboxes: %w", mongox.Classify(err))
	}
	var out []Pending
	for _, d := range docs {
		for _, o := range d.Outbox {
			var of struct {
				CampaignID string `json:"campaignId"`
			}
			_ = json.Unmarshal([]byte(o.Data), &of) // what the outbox holds was encoded by outboxOf
			out = append(out, Pending{DocumentID: d.ID, CampaignID: of.CampaignID, Message: o.message()})
		}
	}
	slices.SortFunc(out, func(a, b Pending) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// RemoveFromOutbox deletes published events from a document record's
// outbox: RemoveFromOutboxes of one record.
func (s *Store) RemoveFromOutbox(ctx context.Context, documentID string, msgs []events.Message) error {
	return s.RemoveFromOutboxes(ctx, map[string][]events.Message{documentID: msgs})
}

// RemoveFromOutboxes deletes published events from the outboxes of the
// records of batch (document id → its events) in one command: a $pullAll
// of the elements as stored per record (FerretDB's $pull matches whole
// elements, not a query), each filtered on _id alone: no read, and no
// scan on the embedded store. It leaves the revisions alone: a command's
// write appends to the outbox with $push and never sets it. It takes the
// records' locks (in order, so two removals never wait for each other in
// a circle): on a store that does not isolate concurrent updates, a
// removal racing a command could otherwise undo the command; on MongoDB
// each $pullAll is atomic. A removal is idempotent: after a failure the
// whole batch may be sent again.
func (s *Store) RemoveFromOutboxes(ctx context.Context, batch map[string][]events.Message) error {
	ids := slices.Sorted(maps.Keys(batch))
	models := make([]mongo.WriteModel, 0, len(ids))
	for _, id := range ids {
		unlock, err := s.locks.Lock(ctx, "document/"+id)
		if err != nil {
			return err
		}
		defer unlock()
		elems := make(bson.A, 0, len(batch[id]))
		for _, m := range batch[id] {
			elems = append(elems, outboxElem(m))
		}
		models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: id}}).
			SetUpdate(bson.D{{Key: "$pullAll", Value: bson.D{{Key: "outbox", Value: elems}}}}))
	}
	if len(models) == 0 {
		return nil
	}
	if _, err := s.documents.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
		return fmt.Errorf("remove published events from %d outboxes: %w", len(models), mongox.Classify(err))
	}
	return nil
}
