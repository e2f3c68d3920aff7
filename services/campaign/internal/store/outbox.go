package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"go.mongodb.org/mongo-driver/v2/bson"
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
// outbox in one $pullAll of the elements as stored (FerretDB's $pull
// matches whole elements, not a query), filtered on _id alone: no read,
// and no scan on the embedded store. It leaves the revision alone: a
// command's write appends to the outbox with $push and never sets it. It
// takes the record's lock: on a store that does not isolate concurrent
// updates, a removal racing a command could otherwise undo the command; on
// MongoDB $pullAll is atomic.
func (s *Store) RemoveFromOutbox(ctx context.Context, documentID string, msgs []events.Message) error {
	unlock, err := s.locks.Lock(ctx, "document/"+documentID)
	if err != nil {
		return err
	}
	defer unlock()
	elems := make(bson.A, 0, len(msgs))
	for _, m := range msgs {
		elems = append(elems, outboxElem(m))
	}
	_, err = s.documents.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: documentID}},
		bson.D{{Key: "$pullAll", Value: bson.D{{Key: "outbox", Value: elems}}}})
	if err != nil {
		return fmt.Errorf("remove %d events from the outbox of %s: %w", len(msgs), documentID, mongox.Classify(err))
	}
	return nil
}
