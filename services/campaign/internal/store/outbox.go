package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Pending is an outbox event and the campaign that holds it.
type Pending struct {
	CampaignID string
	events.Message
}

// Pending returns every event still in an outbox, oldest event id first.
func (s *Store) Pending(ctx context.Context) ([]Pending, error) {
	cur, err := s.campaigns.Find(ctx,
		bson.D{{Key: "outbox.0", Value: bson.D{{Key: "$exists", Value: true}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "outbox", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("scan outboxes: %w", mongox.Classify(err))
	}
	var docs []campaignDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("scan outboxes: %w", mongox.Classify(err))
	}
	var out []Pending
	for _, d := range docs {
		for _, o := range d.Outbox {
			out = append(out, Pending{CampaignID: d.ID, Message: o.message()})
		}
	}
	slices.SortFunc(out, func(a, b Pending) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// RemoveFromOutbox deletes published events from a campaign's outbox. It
// takes the campaign's lock, and writes only if the campaign's revision is
// still the one it read, so that a removal racing a command can never undo
// the command's write (the command's new event would otherwise vanish).
func (s *Store) RemoveFromOutbox(ctx context.Context, campaignID string, eventIDs []string) error {
	unlock, err := s.locks.Lock(ctx, "campaign/"+campaignID)
	if err != nil {
		return err
	}
	defer unlock()
	for attempt := 0; attempt < 5; attempt++ {
		d, err := s.get(ctx, campaignID)
		if errors.Is(err, campaign.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		kept := slices.DeleteFunc(slices.Clone(d.Outbox), func(o outboxDoc) bool { return slices.Contains(eventIDs, o.ID) })
		if len(kept) == len(d.Outbox) {
			return nil
		}
		if kept == nil {
			kept = []outboxDoc{}
		}
		res, err := s.campaigns.UpdateOne(ctx,
			bson.D{{Key: "_id", Value: campaignID}, {Key: "revision", Value: d.Revision}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "outbox", Value: kept}, {Key: "revision", Value: d.Revision + 1}}}})
		if err != nil {
			return fmt.Errorf("remove %d events from outbox of %s: %w", len(eventIDs), campaignID, mongox.Classify(err))
		}
		if res.MatchedCount == 1 {
			return nil
		}
	}
	return ErrConflict
}
