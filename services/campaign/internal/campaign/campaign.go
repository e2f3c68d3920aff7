// Package campaign holds the RCM campaign rules: which documents allow a
// campaign, what a start and an opt-out change, when a campaign ends, and the
// event each of them produces. It knows nothing of HTTP, Kafka or MongoDB.
package campaign

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
)

// Channel is an outreach channel, or All in an opt-out.
type Channel string

// Channels, named by the contract. All is valid only in an opt-out.
const (
	SMS   Channel = contract.ChannelSMS
	Email Channel = contract.ChannelEmail
	Call  Channel = contract.ChannelCall
	All   Channel = contract.ChannelAll
)

// LoanStatusBehind is the only loan status that allows a campaign.
const LoanStatusBehind = "BEHIND"

// Errors of the rules. Callers map them to the contract's responses.
var (
	ErrInvalid   = errors.New("invalid command")
	ErrNoChannel = errors.New("at least one channel must be true")
	ErrLoanRule  = errors.New("a campaign needs a loan with status BEHIND")
	ErrNotFound  = errors.New("not found")
	// ErrAllRevoked means every channel a start asks for is revoked on
	// its document: the start records nothing.
	ErrAllRevoked = errors.New("every requested channel is opted out for this document")
)

// Loan is the loan attached to a document.
type Loan struct {
	Status string
}

// Document is the campaign service's view of another team's document.
type Document struct {
	ID        string
	AccountID string
	Loan      *Loan // nil: no loan
	Borrower  Borrower
	Version   int64
	Deleted   bool
}

// Borrower is what the contact rules need to know of a document's
// borrower. Either field may be "": not known.
type Borrower struct {
	TimeZone string // an IANA name, as the documents team sent it
	State    string // a two-letter postal code, upper case
}

// AllowsCampaign reports whether a campaign may run on d: it exists and its
// loan is BEHIND.
func (d Document) AllowsCampaign() bool {
	return !d.Deleted && d.Loan != nil && d.Loan.Status == LoanStatusBehind
}

// endReason says why d ends its campaigns; ok is false when d allows them.
func (d Document) endReason() (reason string, loanStatus *string, ok bool) {
	switch {
	case d.AllowsCampaign():
		return "", nil, false
	case d.Deleted || d.Loan == nil:
		return events.ReasonLoanRemoved, nil, true
	case d.Loan.Status == "CURRENT":
		s := d.Loan.Status
		return events.ReasonLoanCurrent, &s, true
	default:
		s := d.Loan.Status
		return events.ReasonLoanStatusChanged, &s, true
	}
}

// OptOut is one recorded opt-out request.
type OptOut struct {
	EventID    string
	Channel    Channel
	Notes      string
	RecordedAt time.Time
	// RequestKey is the client's Idempotency-Key, when it sent one.
	RequestKey string
}

// Campaign is an outreach campaign on one document of one account. Its
// own state (Active, OptOuts, the end) and its document's Consent are read
// and written together, in the document's record: ActiveChannels is
// derived from both (see refresh) and never stored.
type Campaign struct {
	ID             string
	AccountID      string
	DocumentID     string
	SMS            bool
	Email          bool
	Call           bool
	Tone           string
	Cadence        string
	Notes          string
	Active         bool
	ActiveChannels []Channel
	OptOuts        []OptOut
	CreatedBy      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	EndedAt        time.Time // zero while not ended
	EndReason      string
	// Consent is its document's consent as read with the campaign. An
	// opt-out changes it; the store writes it back with the campaign.
	Consent events.Consent
}

// Started returns the channels the campaign was started with, in the
// contract's order.
func (c *Campaign) Started() []Channel {
	var out []Channel
	for _, ch := range []struct {
		on bool
		ch Channel
	}{{c.SMS, SMS}, {c.Email, Email}, {c.Call, Call}} {
		if ch.on {
			out = append(out, ch.ch)
		}
	}
	return out
}

// OptedOut reports whether the campaign's own opt-outs name ch (or all).
func (c *Campaign) OptedOut(ch Channel) bool {
	return slices.ContainsFunc(c.OptOuts, func(o OptOut) bool { return o.Channel == ch || o.Channel == All })
}

// Refresh derives ActiveChannels: the channels the campaign was started
// with, minus its own opt-outs, minus the channels revoked on its document
// (c.Consent); none when it is not active. Callers that change Consent
// call it; every method of Campaign that changes state calls it.
func (c *Campaign) Refresh() {
	c.ActiveChannels = nil
	if !c.Active {
		return
	}
	for _, ch := range c.Started() {
		if !c.OptedOut(ch) && !c.Consent.Revoked(string(ch)) {
			c.ActiveChannels = append(c.ActiveChannels, ch)
		}
	}
}

// Suppressed returns the channels the campaign was started with that are
// revoked on its document, with the current revocation of each.
func (c *Campaign) Suppressed() []events.SuppressedChannel {
	out := []events.SuppressedChannel{}
	for _, ch := range c.Started() {
		st := c.Consent.Channels.Channel(string(ch))
		if st != nil && st.Status == events.ConsentRevoked {
			out = append(out, events.SuppressedChannel{Channel: string(ch), RevokedAt: st.ChangedAt, EventID: st.EventID})
		}
	}
	return out
}

// StartInput is what a client asks for when starting a campaign.
type StartInput struct {
	SMS     bool
	Email   bool
	Call    bool
	Tone    string
	Cadence string
	Notes   string
}

// Normalize trims the strings and checks the contract's lengths and the
// channel rule, in the contract's order: body errors (ErrInvalid) before
// ErrNoChannel.
func (in StartInput) Normalize() (StartInput, error) {
	in.Tone = strings.TrimSpace(in.Tone)
	in.Cadence = strings.TrimSpace(in.Cadence)
	in.Notes = strings.TrimSpace(in.Notes)
	if err := checkLen("tone", in.Tone, contract.MinTone, contract.MaxTone); err != nil {
		return in, err
	}
	if err := checkLen("cadence", in.Cadence, contract.MinCadence, contract.MaxCadence); err != nil {
		return in, err
	}
	if err := checkLen("notes", in.Notes, 0, contract.MaxNotes); err != nil {
		return in, err
	}
	if !in.SMS && !in.Email && !in.Call {
		return in, ErrNoChannel
	}
	return in, nil
}

// NormalizeOptOut trims notes and checks the channel and the length.
func NormalizeOptOut(ch Channel, notes string) (Channel, string, error) {
	notes = strings.TrimSpace(notes)
	switch ch {
	case SMS, Email, Call, All:
	default:
		return ch, notes, fmt.Errorf("%w: channel %q is not sms, email, call or all", ErrInvalid, ch)
	}
	if err := checkLen("notes", notes, 0, contract.MaxNotes); err != nil {
		return ch, notes, err
	}
	return ch, notes, nil
}

func checkLen(field, v string, min, max int) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, field)
	}
	n := utf8.RuneCountInString(v)
	if n < min || n > max {
		return fmt.Errorf("%w: %s has %d characters, want %d to %d", ErrInvalid, field, n, min, max)
	}
	return nil
}

// Start starts a campaign on doc. The caller has already checked that doc
// belongs to the actor's account (else ErrNotFound is the caller's answer).
func Start(in StartInput, doc Document, actor events.Actor, newID func(prefix string) string, now time.Time) (Campaign, events.Event, error) {
	in, err := in.Normalize()
	if err != nil {
		return Campaign{}, events.Event{}, err
	}
	if !doc.AllowsCampaign() {
		return Campaign{}, events.Event{}, ErrLoanRule
	}
	now = now.UTC().Truncate(time.Millisecond)
	c := Campaign{
		ID:         newID(ids.CampaignPrefix),
		AccountID:  doc.AccountID,
		DocumentID: doc.ID,
		SMS:        in.SMS,
		Email:      in.Email,
		Call:       in.Call,
		Tone:       in.Tone,
		Cadence:    in.Cadence,
		Notes:      in.Notes,
		Active:     true,
		CreatedBy:  actor.ID,
		CreatedAt:  now,
		UpdatedAt:  now,
		Consent:    events.NewConsent(),
	}
	c.Refresh()
	rec := c.Record()
	e := c.event(newID(ids.EventPrefix), events.TypeCampaignStarted, actor, now)
	e.Campaign = &rec
	return c, e, nil
}

// Admit fits a campaign Start returned, and its campaign_started event e,
// to its document's consent as read where the start is written: the
// revoked channels are left out of ActiveChannels and listed as
// suppressed, in the campaign and in the event. It returns ErrAllRevoked,
// and nothing is to be written, when every channel the start asks for is
// revoked.
func Admit(c Campaign, e events.Event, consent events.Consent) (Campaign, events.Event, error) {
	c.Consent = consent
	revoked := 0
	for _, ch := range c.Started() {
		if consent.Revoked(string(ch)) {
			revoked++
		}
	}
	if revoked == len(c.Started()) {
		return Campaign{}, events.Event{}, ErrAllRevoked
	}
	c.Refresh()
	rec := c.Record()
	e.Campaign = &rec
	return c, e, nil
}

// OptOut records a borrower's opt-out. Opting out of a channel revokes it
// on the campaign's document (all: the three) and joins the campaign's own
// opt-outs; opting out of all, or of the last channel the campaign was
// started with, deactivates the campaign. Every opt-out is recorded and
// produces an event carrying the document's consent after it, also a
// repeated one or one on an inactive campaign: the audit trail keeps every
// request a borrower made.
func (c *Campaign) OptOut(ch Channel, notes string, actor events.Actor, eventID string, now time.Time) (events.Event, error) {
	return c.OptOutOnce(ch, notes, "", actor, eventID, now)
}

// RecordedRequest reports whether an opt-out sent with the Idempotency-Key
// key was recorded at or after since.
func (c *Campaign) RecordedRequest(key string, since time.Time) bool {
	if key == "" {
		return false
	}
	for _, o := range c.OptOuts {
		if o.RequestKey == key && !o.RecordedAt.Before(since) {
			return true
		}
	}
	return false
}

// OptOutOnce is OptOut for a request sent with an Idempotency-Key,
// recorded with the opt-out so that a retry can tell it already happened.
func (c *Campaign) OptOutOnce(ch Channel, notes, requestKey string, actor events.Actor, eventID string, now time.Time) (events.Event, error) {
	ch, notes, err := NormalizeOptOut(ch, notes)
	if err != nil {
		return events.Event{}, err
	}
	now = now.UTC().Truncate(time.Millisecond)
	if c.Consent == (events.Consent{}) {
		c.Consent = events.NewConsent() // a campaign read without its document's consent
	}
	if err := c.Consent.Set(string(ch), events.ConsentRevoked, events.SourceOptOut, eventID, now); err != nil {
		return events.Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	wasActive := c.Active
	c.OptOuts = append(c.OptOuts, OptOut{EventID: eventID, Channel: ch, Notes: notes, RecordedAt: now, RequestKey: requestKey})
	if !slices.ContainsFunc(c.Started(), func(s Channel) bool { return !c.OptedOut(s) }) {
		c.Active = false
	}
	c.UpdatedAt = now
	c.Refresh()

	e := c.event(eventID, events.TypeOptOut, actor, now)
	e.Channel = string(ch)
	e.Notes = notes
	deactivated := wasActive && !c.Active
	active := c.Active
	e.Deactivated = &deactivated
	e.Active = &active
	e.ActiveChannels = channelNames(c.ActiveChannels)
	consent := c.Consent
	e.Consent = &consent
	return e, nil
}

// EndIfLoanLeft ends an active campaign whose document no longer allows
// campaigns. It reports false, and changes nothing, when the campaign is
// already inactive or the document still allows it.
func (c *Campaign) EndIfLoanLeft(doc Document, eventID string, now time.Time) (events.Event, bool) {
	reason, status, ends := doc.endReason()
	if !ends || !c.Active {
		return events.Event{}, false
	}
	now = now.UTC().Truncate(time.Millisecond)
	c.Active = false
	c.Refresh()
	c.EndedAt = now
	c.EndReason = reason
	c.UpdatedAt = now
	e := c.event(eventID, events.TypeCampaignEnded, SystemActor, now)
	e.Reason = reason
	e.LoanStatus = status
	return e, true
}

// SystemActor is the actor of what the platform does on its own.
var SystemActor = events.Actor{Type: events.ActorSystem, ID: "rcm/campaign"}

func (c *Campaign) event(id, typ string, actor events.Actor, at time.Time) events.Event {
	return events.Event{
		EventID:    id,
		EventType:  typ,
		AccountID:  c.AccountID,
		DocumentID: c.DocumentID,
		CampaignID: c.ID,
		Actor:      actor,
		OccurredAt: events.FormatTime(at),
	}
}

func channelNames(chs []Channel) []string {
	out := make([]string, 0, len(chs))
	for _, ch := range chs {
		out = append(out, string(ch))
	}
	return out
}

// Record returns the campaign as the API shows it.
func (c Campaign) Record() events.CampaignRecord {
	r := events.CampaignRecord{
		ID:             c.ID,
		DocumentID:     c.DocumentID,
		SMS:            c.SMS,
		Email:          c.Email,
		Call:           c.Call,
		Tone:           c.Tone,
		Cadence:        c.Cadence,
		Notes:          c.Notes,
		Active:         c.Active,
		ActiveChannels: channelNames(c.ActiveChannels),
		Suppressed:     c.Suppressed(),
		OptOuts:        make([]events.OptOutRecord, 0, len(c.OptOuts)),
		CreatedBy:      c.CreatedBy,
		CreatedAt:      events.FormatTime(c.CreatedAt),
		UpdatedAt:      events.FormatTime(c.UpdatedAt),
		EndReason:      c.EndReason,
	}
	if !c.EndedAt.IsZero() {
		r.EndedAt = events.FormatTime(c.EndedAt)
	}
	for _, o := range c.OptOuts {
		r.OptOuts = append(r.OptOuts, events.OptOutRecord{Channel: string(o.Channel), Notes: o.Notes, RecordedAt: events.FormatTime(o.RecordedAt)})
	}
	return r
}
