package app

import (
	"context"
	"errors"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// Campaign returns the campaign campaignID of documentID as p's account
// sees it.
func (a *Campaigns) Campaign(ctx context.Context, p principal.Principal, documentID, campaignID string) (campaign.Campaign, error) {
	if !ids.Valid(ids.CampaignPrefix, campaignID) {
		return campaign.Campaign{}, httpx.ErrCampaignNotFound
	}
	c, err := a.store.Get(ctx, p.AccountID, documentID, campaignID)
	if err != nil {
		return campaign.Campaign{}, contractError(err, httpx.ErrCampaignNotFound)
	}
	return c, nil
}

// List returns a page of the campaigns of documentID that p's account
// started, newest first, after cursor ("" for the first page). A deleted
// document still lists the campaigns it had; a document the account
// cannot see and has no campaign on is not found.
func (a *Campaigns) List(ctx context.Context, p principal.Principal, documentID, cursor string, limit int) (store.Page, error) {
	if _, err := a.store.Document(ctx, p.AccountID, documentID); err != nil {
		if !errors.Is(err, campaign.ErrNotFound) {
			return store.Page{}, contractError(err, httpx.ErrNotFound)
		}
		some, err := a.store.HasCampaigns(ctx, p.AccountID, documentID)
		if err != nil {
			return store.Page{}, contractError(err, httpx.ErrNotFound)
		}
		if !some {
			return store.Page{}, httpx.ErrNotFound
		}
	}
	page, err := a.store.PageByDocument(ctx, p.AccountID, documentID, cursor, limit)
	if err != nil {
		return store.Page{}, contractError(err, httpx.ErrNotFound)
	}
	return page, nil
}
