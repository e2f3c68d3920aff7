package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
)

// ApplyDocument stores a new version of a document in the read model, if
// it is newer than the one held, then ends the document's active
// campaigns if it no longer allows them (see EndOnLoanChange).
func (a *Campaigns) ApplyDocument(ctx context.Context, doc campaign.Document) error {
	if _, err := a.store.ApplyDocument(ctx, doc, a.now()); err != nil {
		return err
	}
	return a.EndOnLoanChange(ctx, doc.ID)
}

// DeleteDocument marks a document deleted in the read model (a
// tombstone), then ends its active campaigns if the version held no longer
// allows them (see EndOnLoanChange).
func (a *Campaigns) DeleteDocument(ctx context.Context, documentID string) error {
	if _, err := a.store.DeleteDocument(ctx, documentID, a.now()); err != nil {
		return err
	}
	return a.EndOnLoanChange(ctx, documentID)
}

// EndOnLoanChange ends every active campaign of documentID, whatever its
// account, if the document as stored no longer allows campaigns, each in
// one write with its campaign_ended event. It runs from the stored state,
// whether or not the update that led here changed it, so that a crash
// between storing a document and ending its campaigns is repaired when the
// update is delivered again.
func (a *Campaigns) EndOnLoanChange(ctx context.Context, documentID string) error {
	doc, err := a.store.AnyDocument(ctx, documentID)
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
		if _, err := a.endIfLoanLeft(ctx, c.AccountID, c.ID, doc); err != nil {
			return err
		}
	}
	return nil
}

// endIfLoanLeft ends the campaign if doc no longer allows it, in one write
// with its campaign_ended event, and hands the event to the relay. It
// returns the campaign as stored afterwards.
func (a *Campaigns) endIfLoanLeft(ctx context.Context, accountID, campaignID string, doc campaign.Document) (campaign.Campaign, error) {
	c, msgs, err := a.store.Update(ctx, accountID, doc.ID, campaignID, func(c *campaign.Campaign) ([]events.Event, error) {
		e, ended := c.EndIfLoanLeft(doc, a.newID(ids.EventPrefix), a.now())
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
		a.relay.Enqueue(c.DocumentID, msgs...)
		a.logger.InfoContext(ctx, "campaign ended", slog.String("campaign_id", campaignID), slog.String("event_id", msgs[0].ID), slog.String("document_id", doc.ID))
	}
	return c, nil
}
