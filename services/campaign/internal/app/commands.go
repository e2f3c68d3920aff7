package app

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// StartInput is a start command: the campaign's settings on a document.
type StartInput struct {
	DocumentID string
	campaign.StartInput
}

// Start starts a campaign on in.DocumentID and answers 201 with it. The
// contract's order of checks: body, channel rule, ownership, loan rule.
func (a *Campaigns) Start(ctx context.Context, req Request, in StartInput) (Answer, error) {
	settings, err := in.StartInput.Normalize()
	if err != nil {
		return Answer{}, contractError(err, httpx.ErrNotFound)
	}
	p := req.Principal
	return a.once(ctx, req, a.newID(ids.CampaignPrefix), func(campaignID string, recovering bool) (int, any, error) {
		if recovering {
			// The first attempt may have written the campaign: the
			// campaign id chosen at the claim tells.
			c, err := a.store.Get(ctx, p.AccountID, in.DocumentID, campaignID)
			if err == nil {
				return http.StatusCreated, started(c), nil
			}
			if !errors.Is(err, campaign.ErrNotFound) {
				return 0, nil, contractError(err, httpx.ErrNotFound)
			}
		}
		c, err := a.start(ctx, req, in.DocumentID, settings, campaignID)
		if errors.Is(err, store.ErrExists) {
			// An earlier attempt's write landed meanwhile: answer it.
			if c, err = a.store.Get(ctx, p.AccountID, in.DocumentID, campaignID); err == nil {
				a.relay.Missed()
				return http.StatusCreated, started(c), nil
			}
		}
		if err != nil {
			return 0, nil, contractError(err, httpx.ErrNotFound)
		}
		return http.StatusCreated, started(c), nil
	})
}

func started(c campaign.Campaign) any { return map[string]any{"campaign": c.Record()} }

// start starts a campaign with the given id on documentID: one read of
// the document's record and one write of it (see store.Start), which
// also claims the principal's nonce when the command is to claim it.
// Nothing was written when the read fails, and no later loan check is
// needed: the record's revision orders the start against a loan update.
func (a *Campaigns) start(ctx context.Context, req Request, documentID string, in campaign.StartInput, campaignID string) (campaign.Campaign, error) {
	p := req.Principal
	newID := func(prefix string) string {
		if prefix == ids.CampaignPrefix {
			return campaignID
		}
		return a.newID(prefix)
	}
	c, msg, err := a.store.Start(ctx, p.AccountID, documentID, req.nonce(), func(doc campaign.Document) (campaign.Campaign, events.Event, error) {
		return campaign.Start(in, doc, actorOf(p), newID, a.now())
	})
	if store.IsUnwritten(err) {
		return campaign.Campaign{}, idempotency.NothingWritten(err)
	}
	if err != nil {
		return campaign.Campaign{}, err
	}
	a.relay.Enqueue(c.DocumentID, msg)
	a.logger.InfoContext(ctx, "campaign started", slog.String("request_id", httpx.RequestID(ctx)),
		slog.String("campaign_id", c.ID), slog.String("event_id", msg.ID), slog.String("account_id", p.AccountID))
	return c, nil
}

// OptOutInput is an opt-out command.
type OptOutInput struct {
	DocumentID string
	CampaignID string
	Channel    campaign.Channel
	Notes      string
}

// OptOut records a borrower's opt-out of a channel of a campaign, which
// also revokes the channel on the campaign's document, and answers 200.
func (a *Campaigns) OptOut(ctx context.Context, req Request, in OptOutInput) (Answer, error) {
	ch, notes, err := campaign.NormalizeOptOut(in.Channel, in.Notes)
	if err != nil {
		return Answer{}, contractError(err, httpx.ErrCampaignNotFound)
	}
	p := req.Principal
	return a.once(ctx, req, in.CampaignID, func(campaignID string, _ bool) (int, any, error) {
		if !ids.Valid(ids.CampaignPrefix, campaignID) {
			return 0, nil, httpx.ErrCampaignNotFound
		}
		c, msgs, err := a.store.Update(ctx, p.AccountID, in.DocumentID, campaignID, func(c *campaign.Campaign) ([]events.Event, error) {
			// A retry of a request whose first attempt was cut short
			// after its write: recorded already, nothing more to do. It
			// is looked for on every attempt, not only when recovering:
			// the revision compare-and-set makes a late write of the
			// first attempt and this one exclusive, and whichever lands
			// second finds the other.
			if c.RecordedRequest(req.Key, a.now().Add(-idempotency.Window)) {
				return nil, nil
			}
			e, err := c.OptOutOnce(ch, notes, req.Key, actorOf(p), a.newID(ids.EventPrefix), a.now())
			if err != nil {
				return nil, err
			}
			return []events.Event{e}, nil
		})
		if err != nil {
			return 0, nil, contractError(err, httpx.ErrCampaignNotFound)
		}
		if len(msgs) > 0 {
			a.relay.Enqueue(c.DocumentID, msgs...)
			a.logger.InfoContext(ctx, "opt-out recorded", slog.String("request_id", httpx.RequestID(ctx)),
				slog.String("campaign_id", campaignID), slog.String("event_id", msgs[0].ID), slog.String("channel", string(ch)))
		}
		return http.StatusOK, map[string]bool{"ok": true}, nil
	})
}
