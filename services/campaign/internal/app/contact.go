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
	"github.com/rcm-platform/rcm/services/campaign/internal/contact"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

// AttemptRecord is a contact attempt as the API returns it.
type AttemptRecord struct {
	ID            string  `json:"id"`
	DocumentID    string  `json:"documentId"`
	CampaignID    *string `json:"campaignId"`
	Channel       string  `json:"channel"`
	Direction     string  `json:"direction"`
	Decision      string  `json:"decision"`
	Reason        *string `json:"reason"`
	NextAllowedAt *string `json:"nextAllowedAt"`
	AttemptedAt   string  `json:"attemptedAt"`
	Notes         string  `json:"notes,omitempty"`
	Outcome       *string `json:"outcome"`
	OutcomeAt     *string `json:"outcomeAt"`
	OutcomeNotes  string  `json:"outcomeNotes,omitempty"`
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := events.FormatTime(t)
	return &s
}

func attemptRecord(documentID string, a store.Attempt) AttemptRecord {
	return AttemptRecord{
		ID: a.ID, DocumentID: documentID, CampaignID: nullString(a.CampaignID), Channel: a.Channel, Direction: a.Direction,
		Decision: a.Decision, Reason: nullString(a.Reason), NextAllowedAt: nullTime(a.NextAllowedAt),
		AttemptedAt: events.FormatTime(a.AttemptedAt), Notes: a.Notes,
		Outcome: nullString(a.Outcome), OutcomeAt: nullTime(a.OutcomeAt), OutcomeNotes: a.OutcomeNotes,
	}
}

// AttemptInput is a contact attempt to clear and record.
type AttemptInput struct {
	DocumentID string
	CampaignID string // required for an outbound attempt
	Channel    string
	Direction  string // "" is outbound
	Notes      string
}

// Normalize trims, defaults the direction and checks the contract's body
// rules.
func (in AttemptInput) Normalize() (AttemptInput, error) {
	in.CampaignID, in.Notes = strings.TrimSpace(in.CampaignID), strings.TrimSpace(in.Notes)
	if in.Direction == "" {
		in.Direction = contact.Outbound
	}
	switch {
	case !contact.ValidChannel(in.Channel):
		return in, fmt.Errorf("%w: channel %q is not sms, email or call", campaign.ErrInvalid, in.Channel)
	case !contact.ValidDirection(in.Direction):
		return in, fmt.Errorf("%w: direction %q is not outbound or inbound", campaign.ErrInvalid, in.Direction)
	case in.Direction == contact.Outbound && in.CampaignID == "":
		return in, fmt.Errorf("%w: an outbound attempt needs its campaignId", campaign.ErrInvalid)
	}
	if err := checkText("notes", in.Notes, 0, contract.MaxNotes); err != nil {
		return in, err
	}
	return in, nil
}

func checkText(field, v string, min, max int) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s is not valid UTF-8", campaign.ErrInvalid, field)
	}
	if n := utf8.RuneCountInString(v); n < min || n > max {
		return fmt.Errorf("%w: %s has %d characters, want %d to %d", campaign.ErrInvalid, field, n, min, max)
	}
	return nil
}

// ContactAttempt clears and records a contact attempt in one write of the
// document's record: the rules read the consent, the campaign, the loan,
// the borrower and the attempts recorded with it, and the attempt, allowed
// or blocked, is written with its event under the record's revision
// compare-and-set, so two attempts racing for the last allowed contact
// cannot both get it. An allowed (or inbound) attempt answers 201, a
// blocked one 409 Contact not permitted. with the reason. The attempt id
// is chosen at the claim of an Idempotency-Key: a retry finds the attempt
// its first try wrote and answers it, never using up a limit twice.
func (a *Campaigns) ContactAttempt(ctx context.Context, req Request, in AttemptInput) (Answer, error) {
	in, err := in.Normalize()
	if err != nil {
		return Answer{}, contractError(err, httpx.ErrCampaignNotFound)
	}
	p := req.Principal
	return a.once(ctx, req, a.newID(ids.AttemptPrefix), func(attemptID string, _ bool) (int, any, error) {
		var out store.Attempt
		_, msgs, err := a.store.UpdateDocument(ctx, p.AccountID, in.DocumentID, req.nonce(), func(r *store.Record) ([]events.Event, error) {
			if i := slices.IndexFunc(r.Attempts, func(at store.Attempt) bool { return at.ID == attemptID }); i >= 0 {
				out = r.Attempts[i] // written by an earlier try of this request
				return nil, nil
			}
			var c *campaign.Campaign
			if in.CampaignID != "" {
				i := slices.IndexFunc(r.Campaigns, func(c campaign.Campaign) bool { return c.ID == in.CampaignID && c.AccountID == p.AccountID })
				if i < 0 {
					return nil, campaign.ErrNotFound
				}
				c = &r.Campaigns[i]
			}
			now := a.now().UTC().Truncate(time.Millisecond)
			out = store.Attempt{ID: attemptID, CampaignID: in.CampaignID, Channel: in.Channel, Direction: in.Direction,
				Decision: events.DecisionAllowed, AttemptedAt: now, Notes: in.Notes, RequestKey: req.Key}
			head := events.Head{EventID: a.newID(ids.EventPrefix), AccountID: p.AccountID, DocumentID: in.DocumentID,
				CampaignID: in.CampaignID, Actor: actorOf(p), At: now}
			e := events.NewContactAttempted(head, events.ContactAttemptedData{AttemptID: attemptID, Channel: in.Channel,
				Direction: in.Direction, AttemptedAt: now, Notes: in.Notes})
			if in.Direction == contact.Outbound {
				// The server's time: an outbound attempt is cleared now.
				if d := contact.Evaluate(facts(r, c, in.Channel, now)); !d.Allowed {
					out.Decision, out.Reason = events.DecisionBlocked, string(d.Reason)
					if d.NextAllowedAt != nil {
						out.NextAllowedAt = d.NextAllowedAt.UTC()
					}
					e = events.NewContactBlocked(head, events.ContactBlockedData{AttemptID: attemptID, Channel: in.Channel,
						Reason: out.Reason, NextAllowedAt: out.NextAllowedAt})
				}
			}
			r.Attempts = append(r.Attempts, out)
			return []events.Event{e}, nil
		})
		if err != nil {
			return 0, nil, contractError(err, httpx.ErrCampaignNotFound)
		}
		if len(msgs) > 0 {
			a.relay.Enqueue(in.DocumentID, msgs...)
			if out.Direction == contact.Outbound {
				if err := a.contact.Observe(out.Channel, out.Decision, out.Reason); err != nil {
					a.logger.WarnContext(ctx, "contact decision not counted", slog.Any("err", err))
				}
			}
			a.logger.InfoContext(ctx, "contact attempt recorded", slog.String("request_id", httpx.RequestID(ctx)),
				slog.String("attempt_id", out.ID), slog.String("event_id", msgs[0].ID), slog.String("decision", out.Decision),
				slog.String("reason", out.Reason))
		}
		if out.Decision == events.DecisionBlocked {
			return 0, nil, httpx.ErrNotPermitted.With("reason", out.Reason).With("nextAllowedAt", nullTime(out.NextAllowedAt)).With("attemptId", out.ID)
		}
		return http.StatusCreated, map[string]any{"attempt": attemptRecord(in.DocumentID, out)}, nil
	})
}

// facts gathers what the rules decide a contact over channel at at on:
// the record's consent, loan, borrower and attempts, and the campaign c
// (nil: the campaign's rules are skipped).
func facts(r *store.Record, c *campaign.Campaign, channel string, at time.Time) contact.Facts {
	f := contact.Facts{At: at, Channel: channel, LoanBehind: r.Document.AllowsCampaign(),
		TimeZone: r.Document.Borrower.TimeZone, State: r.Document.Borrower.State}
	for _, ch := range contract.Channels() {
		if r.Consent.Revoked(ch) {
			f.Revoked = append(f.Revoked, ch)
		}
	}
	if c != nil {
		fc := contact.Campaign{Active: c.Active}
		for _, ch := range c.Started() {
			fc.Channels = append(fc.Channels, string(ch))
		}
		for _, ch := range contract.Channels() {
			if c.OptedOut(campaign.Channel(ch)) {
				fc.OptedOut = append(fc.OptedOut, ch)
			}
		}
		f.Campaign = &fc
	}
	for _, at := range r.Attempts {
		f.History = append(f.History, contact.Attempt{Channel: at.Channel, Direction: at.Direction,
			Allowed: at.Decision == events.DecisionAllowed, AttemptedAt: at.AttemptedAt, Outcome: at.Outcome, OutcomeAt: at.OutcomeAt})
	}
	return f
}

// OutcomeInput is the outcome of a contact attempt.
type OutcomeInput struct {
	DocumentID string
	AttemptID  string
	Outcome    string
	Notes      string
}

// RecordOutcome sets an allowed attempt's outcome, once: the same outcome
// again answers the stored attempt and records nothing, another one 409.
// The contract's order: body (an outcome no channel takes first; one of
// another channel once the attempt is found), 404, 409.
func (a *Campaigns) RecordOutcome(ctx context.Context, req Request, in OutcomeInput) (Answer, error) {
	in.Notes = strings.TrimSpace(in.Notes)
	known := slices.ContainsFunc(contract.Channels(), func(ch string) bool { return contact.ValidOutcome(ch, in.Outcome) })
	if !known {
		return Answer{}, httpx.ErrInvalidBody.With("reason", fmt.Sprintf("outcome %q is not one an attempt takes", in.Outcome))
	}
	if err := checkText("notes", in.Notes, 0, contract.MaxNotes); err != nil {
		return Answer{}, contractError(err, httpx.ErrAttemptNotFound)
	}
	p := req.Principal
	return a.once(ctx, req, in.AttemptID, func(attemptID string, _ bool) (int, any, error) {
		if !ids.Valid(ids.AttemptPrefix, attemptID) {
			return 0, nil, httpx.ErrAttemptNotFound
		}
		var out store.Attempt
		_, msgs, err := a.store.UpdateDocument(ctx, p.AccountID, in.DocumentID, store.Nonce{}, func(r *store.Record) ([]events.Event, error) {
			i := slices.IndexFunc(r.Attempts, func(at store.Attempt) bool { return at.ID == attemptID })
			if i < 0 || r.Attempts[i].Decision != events.DecisionAllowed {
				return nil, httpx.ErrAttemptNotFound
			}
			at := r.Attempts[i]
			switch {
			case !contact.ValidOutcome(at.Channel, in.Outcome):
				return nil, httpx.ErrInvalidBody.With("reason", fmt.Sprintf("outcome %q is not one a %s takes", in.Outcome, at.Channel))
			case at.Outcome == in.Outcome:
				out = at // set already: nothing to record
				return nil, nil
			case at.Outcome != "":
				return nil, httpx.ErrOutcomeRecorded
			}
			now := a.now().UTC().Truncate(time.Millisecond)
			at.Outcome, at.OutcomeAt, at.OutcomeNotes = in.Outcome, now, in.Notes
			r.Attempts[i], out = at, at
			head := events.Head{EventID: a.newID(ids.EventPrefix), AccountID: p.AccountID, DocumentID: in.DocumentID,
				CampaignID: at.CampaignID, Actor: actorOf(p), At: now}
			return []events.Event{events.NewContactOutcome(head, events.ContactOutcomeData{AttemptID: at.ID, Channel: at.Channel,
				Outcome: at.Outcome, OutcomeAt: now, Notes: in.Notes})}, nil
		})
		if err != nil {
			return 0, nil, contractError(err, httpx.ErrAttemptNotFound)
		}
		if len(msgs) > 0 {
			a.relay.Enqueue(in.DocumentID, msgs...)
			a.logger.InfoContext(ctx, "contact outcome recorded", slog.String("request_id", httpx.RequestID(ctx)),
				slog.String("attempt_id", out.ID), slog.String("event_id", msgs[0].ID), slog.String("outcome", out.Outcome))
		}
		return http.StatusOK, map[string]any{"attempt": attemptRecord(in.DocumentID, out)}, nil
	})
}

// AttemptPage is a page of a document's attempts, newest first.
type AttemptPage struct {
	Attempts []AttemptRecord `json:"attempts"`
	// NextCursor is the last attempt's id when more follow.
	NextCursor string `json:"nextCursor,omitempty"`
}

// Attempts returns a page of documentID's attempts, allowed and blocked,
// newest first, after the attempt id cursor ("" for the first page).
func (a *Campaigns) Attempts(ctx context.Context, p principal.Principal, documentID, cursor string, limit int) (AttemptPage, error) {
	r, err := a.store.ReadDocument(ctx, p.AccountID, documentID)
	if err != nil {
		return AttemptPage{}, contractError(err, httpx.ErrNotFound)
	}
	end := len(r.Attempts)
	if cursor != "" {
		end = slices.IndexFunc(r.Attempts, func(at store.Attempt) bool { return at.ID == cursor })
	}
	page := AttemptPage{Attempts: []AttemptRecord{}}
	for i := end - 1; i >= 0 && len(page.Attempts) < limit; i-- {
		page.Attempts = append(page.Attempts, attemptRecord(documentID, r.Attempts[i]))
		if len(page.Attempts) == limit && i > 0 {
			page.NextCursor = r.Attempts[i].ID
		}
	}
	return page, nil
}

// Clearance is the answer of a dry run.
type Clearance struct {
	Allowed       bool    `json:"allowed"`
	Reason        *string `json:"reason"`
	NextAllowedAt *string `json:"nextAllowedAt"`
}

// ClearanceInput is a dry run: may a contact over Channel happen At?
type ClearanceInput struct {
	DocumentID string
	CampaignID string // "": the campaign's rules are skipped
	Channel    string
	At         time.Time // zero: now
}

// Clear evaluates the rules at in.At against what is recorded now and
// records nothing: 404 Not found. for a document p's account cannot see,
// 404 Campaign not found or access denied. for a campaign not of it.
func (a *Campaigns) Clear(ctx context.Context, p principal.Principal, in ClearanceInput) (Clearance, error) {
	now := a.now()
	if in.At.IsZero() {
		in.At = now
	}
	if in.At.Before(now.Add(-time.Minute)) || in.At.After(now.Add(366*24*time.Hour)) {
		return Clearance{}, httpx.ErrInvalidQuery.With("reason", "at must be from one minute ago to 366 days ahead")
	}
	r, err := a.store.ReadDocument(ctx, p.AccountID, in.DocumentID)
	if err != nil {
		return Clearance{}, contractError(err, httpx.ErrNotFound)
	}
	var c *campaign.Campaign
	if in.CampaignID != "" {
		i := slices.IndexFunc(r.Campaigns, func(c campaign.Campaign) bool { return c.ID == in.CampaignID && c.AccountID == p.AccountID })
		if i < 0 {
			return Clearance{}, httpx.ErrCampaignNotFound
		}
		c = &r.Campaigns[i]
	}
	d := contact.Evaluate(facts(&r, c, in.Channel, in.At.UTC().Truncate(time.Millisecond)))
	out := Clearance{Allowed: d.Allowed, Reason: nullString(string(d.Reason))}
	if d.NextAllowedAt != nil {
		out.NextAllowedAt = nullTime(*d.NextAllowedAt)
	}
	return out, nil
}
