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

// Published is the relay's side of a command's write: which events of a
// record's outbox were published (and their document's consent state
// after them, when they changed it) and may leave the outbox. A command's
// write takes them out with its own change, so that a busy record costs
// one write per command and no removal of its own; the relay removes
// what no write took out within a while (RemoveFromOutboxes).
type Published interface {
	// Published returns the ids of events of documentID's outbox that may
	// leave it.
	Published(documentID string) []string
	// TakenOut says a write of documentID's record took the events ids
	// out of its outbox.
	TakenOut(documentID string, ids []string)
}

type nonePublished struct{}

func (nonePublished) Published(string) []string { return nil }
func (nonePublished) TakenOut(string, []string) {}

// TakeOutPublished makes every command's write of a record take out of
// its outbox the events p says were published. Call it before the store
// serves commands.
func (s *Store) TakeOutPublished(p Published) { s.published = p }

// appendOutbox adds to a record write's set and push the outbox of record
// r with the events appended: pushed while nothing in it was published,
// else set anew without the published events, whose ids it returns (out).
// Setting the outbox whole from what was read is safe only because every
// other write of the outbox moves the record's revision too (a command,
// or RemoveFromOutboxes): the compare-and-set then fails, and an event
// another writer appended or removed meanwhile is neither lost nor put
// back.
func (s *Store) appendOutbox(r documentDoc, appended []outboxDoc, set, push bson.D) (bson.D, bson.D, []string) {
	if len(r.Outbox) > 0 {
		if published := s.published.Published(r.ID); len(published) > 0 {
			kept := make([]outboxDoc, 0, len(r.Outbox)+len(appended))
			var out []string
			for _, o := range r.Outbox {
				if slices.Contains(published, o.ID) {
					out = append(out, o.ID)
					continue
				}
				kept = append(kept, o)
			}
			if len(out) > 0 {
				return append(set, bson.E{Key: "outbox", Value: append(kept, appended...)}), push, out
			}
		}
	}
	return set, append(push, bson.E{Key: "outbox", Value: bson.D{{Key: "$each", Value: appended}}}), nil
}

// update is the update document of set and push (either may be empty).
func update(set, push bson.D) bson.D {
	u := bson.D{{Key: "$set", Value: set}}
	if len(push) > 0 {
		u = append(u, bson.E{Key: "$push", Value: push})
	}
	return u
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
// scan on the embedded store. It raises each record's revision: a
// command that read the record before the removal may set the outbox
// whole from what it read (see appendOutbox), and must then lose its
// compare-and-set rather than put the removed events back. It takes the
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
			SetUpdate(bson.D{{Key: "$pullAll", Value: bson.D{{Key: "outbox", Value: elems}}},
				{Key: "$inc", Value: bson.D{{Key: "revision", Value: 1}}}}))
	}
	if len(models) == 0 {
		return nil
	}
	if _, err := s.documents.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
		return fmt.Errorf("remove published events from %d outboxes: %w", len(models), mongox.Classify(err))
	}
	return nil
}
