package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// Bounds of a consent change's basis, in Unicode code points of the
// trimmed value.
const (
	minBasis = 1
	maxBasis = 200
)

// ConsentState is a document's consent as GET …/consent answers it.
type ConsentState struct {
	DocumentID string                 `json:"documentId"`
	Channels   events.ConsentChannels `json:"channels"`
	Version    int64                  `json:"version"`
}

func consentState(documentID string, c events.Consent) ConsentState {
	return ConsentState{DocumentID: documentID, Channels: c.Channels, Version: c.Version}
}

// Consent returns the consent of documentID as p's account sees it: 404
// Not found. for an unknown, deleted or foreign document.
func (a *Campaigns) Consent(ctx context.Context, p principal.Principal, documentID string) (ConsentState, error) {
	r, err := a.store.ReadDocument(ctx, p.AccountID, documentID)
	if err != nil {
		return ConsentState{}, contractError(err, httpx.ErrNotFound)
	}
	return consentState(documentID, r.Consent), nil
}

// ConsentInput is a consent change that did not come through a
// campaign's opt-out.
type ConsentInput struct {
	DocumentID string
	Channel    string // sms, email, call or all
	Status     string // granted or revoked
	Basis      string
	Notes      string
}

// Normalize trims the strings and checks the contract's rules.
func (in ConsentInput) Normalize() (ConsentInput, error) {
	in.Basis, in.Notes = strings.TrimSpace(in.Basis), strings.TrimSpace(in.Notes)
	switch {
	case !slices.Contains(contract.OptOutChannels(), in.Channel):
		return in, fmt.Errorf("%w: channel %q is not sms, email, call or all", campaign.ErrInvalid, in.Channel)
	case in.Status != events.ConsentGranted && in.Status != events.ConsentRevoked:
		return in, fmt.Errorf("%w: status %q is not granted or revoked", campaign.ErrInvalid, in.Status)
	}
	for _, f := range []struct {
		name     string
		v        string
		min, max int
	}{{"basis", in.Basis, minBasis, maxBasis}, {"notes", in.Notes, 0, contract.MaxNotes}} {
		if !utf8.ValidString(f.v) {
			return in, fmt.Errorf("%w: %s is not valid UTF-8", campaign.ErrInvalid, f.name)
		}
		if n := utf8.RuneCountInString(f.v); n < f.min || n > f.max {
			return in, fmt.Errorf("%w: %s has %d characters, want %d to %d", campaign.ErrInvalid, f.name, n, f.min, f.max)
		}
	}
	return in, nil
}

// ChangeConsent records a consent change of a document and answers 200
// with the document's consent after it. Every accepted request is
// recorded, a repeat too, as its own consent_changed event, in one write
// of the document's record. Granting a channel back makes it active again
// in the document's active campaigns that did not opt it out themselves:
// their active channels are derived from the consent. The contract's
// order: body, then ownership.
func (a *Campaigns) ChangeConsent(ctx context.Context, req Request, in ConsentInput) (Answer, error) {
	in, err := in.Normalize()
	if err != nil {
		return Answer{}, contractError(err, httpx.ErrNotFound)
	}
	p := req.Principal
	return a.once(ctx, req, in.DocumentID, func(documentID string, _ bool) (int, any, error) {
		r, msgs, err := a.store.UpdateDocument(ctx, p.AccountID, documentID, store.Nonce{}, func(r *store.Record) ([]events.Event, error) {
			now := a.now().UTC()
			// As for an opt-out, a retry looks on every attempt for what
			// an earlier one of the same request wrote.
			if recorded(r, req.Key, now) {
				return nil, nil
			}
			r.Requests = slices.DeleteFunc(r.Requests, func(q store.Request) bool { return now.Sub(q.At) > idempotency.Window })
			eventID := a.newID(ids.EventPrefix)
			if err := r.Consent.Set(in.Channel, in.Status, events.SourceConsent, eventID, now); err != nil {
				return nil, fmt.Errorf("%w: %v", campaign.ErrInvalid, err)
			}
			if req.Key != "" {
				r.Requests = append(r.Requests, store.Request{Key: req.Key, EventID: eventID, At: now})
			}
			e := events.NewConsentChanged(events.Head{EventID: eventID, AccountID: p.AccountID, DocumentID: documentID, Actor: actorOf(p), At: now},
				events.ConsentChangedData{Channel: in.Channel, Status: in.Status, Basis: in.Basis, Notes: in.Notes, Consent: r.Consent})
			return []events.Event{e}, nil
		})
		if err != nil {
			return 0, nil, contractError(err, httpx.ErrNotFound)
		}
		if len(msgs) > 0 {
			a.relay.Enqueue(documentID, msgs...)
			a.logger.InfoContext(ctx, "consent change recorded", slog.String("request_id", httpx.RequestID(ctx)),
				slog.String("document_id", documentID), slog.String("event_id", msgs[0].ID),
				slog.String("channel", in.Channel), slog.String("status", in.Status))
		}
		return http.StatusOK, consentState(documentID, r.Consent), nil
	})
}

// recorded reports whether r holds a command sent with the
// Idempotency-Key key within the idempotency window before now.
func recorded(r *store.Record, key string, now time.Time) bool {
	return key != "" && slices.ContainsFunc(r.Requests, func(q store.Request) bool {
		return q.Key == key && now.Sub(q.At) <= idempotency.Window
	})
}
