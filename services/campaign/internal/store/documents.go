package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

type loanDoc struct {
	Status string `bson:"status"`
}

// borrowerDoc is a document's borrower; absent (or null) when nothing of
// it is known, as on documents stored before it existed.
type borrowerDoc struct {
	TimeZone string `bson:"timeZone,omitempty"`
	State    string `bson:"state,omitempty"`
}

func borrowerOf(b campaign.Borrower) *borrowerDoc {
	if b == (campaign.Borrower{}) {
		return nil
	}
	return &borrowerDoc{TimeZone: b.TimeZone, State: b.State}
}

// documentDoc is a document's record: the document as its owners
// published it, and what the platform holds of it: its consent, the
// changing state of its campaigns (in creation order), the outbox of the
// events of both, and the Idempotency-Keys of its commands of no campaign.
// Revision rises with every write, the compare-and-set of every command.
type documentDoc struct {
	ID        string    `bson:"_id"`
	AccountID string    `bson:"accountId"`
	Loan      *loanDoc  `bson:"loan"`
	Version   int64     `bson:"version"`
	Deleted   bool      `bson:"deleted"`
	UpdatedAt time.Time `bson:"updatedAt"`
	// CreatedAt is when the record was made; absent on records made
	// before records held it.
	CreatedAt *time.Time `bson:"createdAt,omitempty"`

	Borrower *borrowerDoc `bson:"borrower,omitempty"`

	Revision  int64        `bson:"revision"`
	Nonces    []nonceDoc   `bson:"nonces,omitempty"`
	Consent   *consentDoc  `bson:"consent,omitempty"`
	Campaigns []stateDoc   `bson:"campaigns,omitempty"`
	Requests  []requestDoc `bson:"requests,omitempty"`
	Attempts  []attemptDoc `bson:"attempts,omitempty"`
	Outbox    []outboxDoc  `bson:"outbox,omitempty"`
}

// attemptDoc is a contact attempt of the document, allowed or blocked.
// Every attempt stays in the record, oldest first: the rules read the
// recent ones in the same write that records the next, and the list
// pages through them.
type attemptDoc struct {
	ID            string     `bson:"id"`
	CampaignID    string     `bson:"campaignId,omitempty"`
	Channel       string     `bson:"channel"`
	Direction     string     `bson:"direction"`
	Decision      string     `bson:"decision"`
	Reason        string     `bson:"reason,omitempty"`
	NextAllowedAt *time.Time `bson:"nextAllowedAt,omitempty"`
	AttemptedAt   time.Time  `bson:"attemptedAt"`
	Notes         string     `bson:"notes,omitempty"`
	Outcome       string     `bson:"outcome,omitempty"`
	OutcomeAt     *time.Time `bson:"outcomeAt,omitempty"`
	OutcomeNotes  string     `bson:"outcomeNotes,omitempty"`
	RequestKey    string     `bson:"requestKey,omitempty"`
}

// Attempt is a contact attempt of a document as its record keeps it.
type Attempt struct {
	ID         string
	CampaignID string // "" for an inbound contact without a campaign
	Channel    string
	Direction  string
	Decision   string // events.DecisionAllowed or events.DecisionBlocked
	Reason     string // "" when allowed
	// NextAllowedAt is zero when allowed or when no time fixes the reason.
	NextAllowedAt time.Time
	AttemptedAt   time.Time
	Notes         string
	Outcome       string    // "" while none
	OutcomeAt     time.Time // zero while none
	OutcomeNotes  string
	// RequestKey is the Idempotency-Key the attempt was sent with.
	RequestKey string
}

func optTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func timeOpt(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (a attemptDoc) attempt() Attempt {
	return Attempt{ID: a.ID, CampaignID: a.CampaignID, Channel: a.Channel, Direction: a.Direction, Decision: a.Decision,
		Reason: a.Reason, NextAllowedAt: optTime(a.NextAllowedAt), AttemptedAt: a.AttemptedAt.UTC(), Notes: a.Notes,
		Outcome: a.Outcome, OutcomeAt: optTime(a.OutcomeAt), OutcomeNotes: a.OutcomeNotes, RequestKey: a.RequestKey}
}

func attemptDocOf(a Attempt) attemptDoc {
	return attemptDoc{ID: a.ID, CampaignID: a.CampaignID, Channel: a.Channel, Direction: a.Direction, Decision: a.Decision,
		Reason: a.Reason, NextAllowedAt: timeOpt(a.NextAllowedAt), AttemptedAt: a.AttemptedAt, Notes: a.Notes,
		Outcome: a.Outcome, OutcomeAt: timeOpt(a.OutcomeAt), OutcomeNotes: a.OutcomeNotes, RequestKey: a.RequestKey}
}

func (d documentDoc) document() campaign.Document {
	doc := campaign.Document{ID: d.ID, AccountID: d.AccountID, Version: d.Version, Deleted: d.Deleted}
	if d.Loan != nil {
		doc.Loan = &campaign.Loan{Status: d.Loan.Status}
	}
	if d.Borrower != nil {
		doc.Borrower = campaign.Borrower{TimeZone: d.Borrower.TimeZone, State: d.Borrower.State}
	}
	return doc
}

// state returns the index of campaign id's state in the record, or -1.
func (d documentDoc) state(id string) int {
	return slices.IndexFunc(d.Campaigns, func(s stateDoc) bool { return s.ID == id })
}

// consent returns the document's consent; NewConsent's while none was
// ever recorded.
func (d documentDoc) consent() events.Consent {
	if d.Consent == nil {
		return events.NewConsent()
	}
	c := d.Consent
	return events.Consent{Version: c.Version, Channels: events.ConsentChannels{
		SMS: c.SMS.channel(), Email: c.Email.channel(), Call: c.Call.channel(),
	}}
}

type consentDoc struct {
	SMS     channelConsentDoc `bson:"sms"`
	Email   channelConsentDoc `bson:"email"`
	Call    channelConsentDoc `bson:"call"`
	Version int64             `bson:"version"`
}

type channelConsentDoc struct {
	Status    string `bson:"status"`
	ChangedAt string `bson:"changedAt,omitempty"`
	EventID   string `bson:"eventId,omitempty"`
	Source    string `bson:"source,omitempty"`
}

func (c channelConsentDoc) channel() events.ChannelConsent {
	return events.ChannelConsent{Status: c.Status, ChangedAt: c.ChangedAt, EventID: c.EventID, Source: c.Source}
}

func channelConsentOf(c events.ChannelConsent) channelConsentDoc {
	return channelConsentDoc{Status: c.Status, ChangedAt: c.ChangedAt, EventID: c.EventID, Source: c.Source}
}

func consentDocOf(c events.Consent) *consentDoc {
	return &consentDoc{
		SMS: channelConsentOf(c.Channels.SMS), Email: channelConsentOf(c.Channels.Email), Call: channelConsentOf(c.Channels.Call),
		Version: c.Version,
	}
}

// requestDoc is a command of the document sent with an Idempotency-Key,
// so that a retry can tell it already happened.
type requestDoc struct {
	Key     string    `bson:"key"`
	EventID string    `bson:"eventId"`
	At      time.Time `bson:"at"`
}

// Request is a command of a document sent with an Idempotency-Key, as its
// record keeps it.
type Request struct {
	Key     string
	EventID string // the event the command recorded
	At      time.Time
}

// Record is a document's record as a command of the document (not of one
// of its campaigns) sees it and changes it.
type Record struct {
	Document campaign.Document
	Consent  events.Consent
	// Campaigns are the document's campaigns, oldest first, as the record
	// holds them: their state, channels and consent, no static fields
	// (tone, cadence, notes, creator, creation time).
	Campaigns []campaign.Campaign
	// Requests are the commands recorded with an Idempotency-Key; a
	// command may drop the old ones.
	Requests []Request
	// Attempts are the document's contact attempts, oldest first.
	Attempts []Attempt
}

func (d documentDoc) record() Record {
	r := Record{Document: d.document(), Consent: d.consent()}
	for _, st := range d.Campaigns {
		r.Campaigns = append(r.Campaigns, st.campaign(d.ID, nil, r.Consent))
	}
	for _, q := range d.Requests {
		r.Requests = append(r.Requests, Request{Key: q.Key, EventID: q.EventID, At: q.At.UTC()})
	}
	for _, a := range d.Attempts {
		r.Attempts = append(r.Attempts, a.attempt())
	}
	return r
}

// apply writes what a command may change of r back into d.
func (d *documentDoc) apply(r Record) {
	d.Consent = consentDocOf(r.Consent)
	d.Campaigns = d.Campaigns[:0:0]
	for _, c := range r.Campaigns {
		d.Campaigns = append(d.Campaigns, stateOf(c))
	}
	d.Requests = nil
	for _, q := range r.Requests {
		d.Requests = append(d.Requests, requestDoc{Key: q.Key, EventID: q.EventID, At: q.At})
	}
	d.Attempts = nil
	for _, a := range r.Attempts {
		d.Attempts = append(d.Attempts, attemptDocOf(a))
	}
}

// record reads documentID's record, whatever it holds.
func (s *Store) record(ctx context.Context, documentID string) (documentDoc, error) {
	var d documentDoc
	err := s.documents.FindOne(ctx, bson.D{{Key: "_id", Value: documentID}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return d, campaign.ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("find document %s: %w", documentID, mongox.Classify(err))
	}
	return d, nil
}

// byRecordRevision is the compare-and-set filter of a command's write of
// documentID's record read at revision rev. A record no command wrote yet
// may have no revision at all.
func byRecordRevision(documentID string, rev int64) bson.D {
	if rev == 0 {
		return bson.D{{Key: "_id", Value: documentID}, {Key: "revision", Value: bson.D{{Key: "$exists", Value: false}}}}
	}
	return byRevision(documentID, "revision", rev)
}

// modify runs fn on documentID's record and writes what fn changed of it
// (consent, campaigns' state, requests, attempts) with fn's events
// appended to its outbox (and the published ones taken out, see
// appendOutbox), and nonce claimed, in one write under the
// revision compare-and-set, and returns the events as they will be
// published. A record that does not exist is campaign.ErrNotFound, fn
// not run. When fn returns no event (or an error) nothing is written but
// the nonce's claim (see Nonce). Writes of one record are serialized in
// the process; a lost compare-and-set (another replica, a document
// update) runs fn again on the fresh record, until ctx ends (then
// ErrConflict).
func (s *Store) modify(ctx context.Context, documentID string, nonce Nonce, fn func(r *documentDoc) ([]events.Event, error)) ([]events.Message, error) {
	unlock, err := s.locks.Lock(ctx, "document/"+documentID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	guarded := false // nonce claimed in the nonce store
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := retryPause(ctx, attempt); err != nil {
				break
			}
		}
		r, err := s.record(ctx, documentID)
		if errors.Is(err, campaign.ErrNotFound) {
			if lost, err := s.claimOnly(ctx, documentDoc{ID: documentID}, false, nonce); lost {
				continue
			} else if err != nil {
				return nil, err
			}
			return nil, campaign.ErrNotFound
		}
		if err != nil {
			return nil, Unwritten(err)
		}
		if err := checkNonce(r, nonce); err != nil {
			return nil, err
		}
		if !guarded && r.young(nonce) {
			if err := s.guardNonce(ctx, nonce); err != nil {
				return nil, err
			}
			guarded = true
		}
		rev, was := r.Revision, fieldsOf(&r)
		evs, err := fn(&r)
		if err == nil && len(evs) == 0 {
			return nil, nil
		}
		if err != nil || len(evs) == 0 {
			if lost, cerr := s.claimOnly(ctx, r, true, nonce); lost {
				continue
			} else if cerr != nil {
				return nil, cerr
			}
			return nil, err
		}
		outbox, msgs, err := outboxOf(ctx, evs)
		if err != nil {
			return nil, err
		}
		set, push := changes(was, fieldsOf(&r), &r)
		set = append(set, bson.E{Key: "revision", Value: rev + 1})
		set, push, out := s.appendOutbox(r, outbox, set, push)
		set, push = nonce.claim(r.Nonces, set, push)
		res, err := s.documents.UpdateOne(ctx, byRecordRevision(documentID, rev), update(set, push))
		if err != nil {
			return nil, fmt.Errorf("write document %s: %w", documentID, mongox.Classify(err))
		}
		if res.MatchedCount == 1 {
			if len(out) > 0 {
				s.published.TakenOut(documentID, out)
			}
			return msgs, nil
		}
	}
	return nil, fmt.Errorf("write document %s: %w", documentID, ErrConflict)
}

// fields is what a command may change of a record, each encoded as the
// store writes it, the attempts one by one: comparing the fields before
// and after a command tells what it changed, whatever it changed in place.
type fields struct {
	consent, campaigns, requests []byte
	attempts                     [][]byte
}

// encoded is v as the store writes it; nil if it cannot be encoded
// (then it never equals anything and is written whole).
func encoded(v any) []byte {
	b, err := bson.Marshal(bson.D{{Key: "v", Value: v}})
	if err != nil {
		return nil
	}
	return b
}

func fieldsOf(d *documentDoc) fields {
	f := fields{consent: encoded(d.Consent), campaigns: encoded(d.Campaigns), requests: encoded(d.Requests)}
	for _, a := range d.Attempts {
		f.attempts = append(f.attempts, encoded(a))
	}
	return f
}

func same(a, b []byte) bool { return a != nil && bytes.Equal(a, b) }

// changes returns the $set and $push of the fields of d that changed from
// was to now: what is unchanged is not written, and attempts appended to
// those held are pushed, so that a command's write is the size of what it
// changed, not of the record. A list held empty (absent, or null in
// records of old) is set, as null takes no $push.
func changes(was, now fields, d *documentDoc) (set, push bson.D) {
	if !same(was.consent, now.consent) {
		set = append(set, bson.E{Key: "consent", Value: d.Consent})
	}
	if !same(was.campaigns, now.campaigns) {
		set = append(set, bson.E{Key: "campaigns", Value: d.Campaigns})
	}
	if !same(was.requests, now.requests) {
		set = append(set, bson.E{Key: "requests", Value: d.Requests})
	}
	n := len(was.attempts)
	kept := len(now.attempts) >= n && slices.EqualFunc(was.attempts, now.attempts[:min(n, len(now.attempts))], same)
	switch {
	case kept && len(now.attempts) == n:
	case kept && n > 0:
		push = append(push, bson.E{Key: "attempts", Value: bson.D{{Key: "$each", Value: d.Attempts[n:]}}})
	default:
		set = append(set, bson.E{Key: "attempts", Value: d.Attempts})
	}
	return set, push
}

// UpdateDocument applies fn to the record of documentID as account sees
// it (campaign.ErrNotFound when it does not exist, was deleted or is
// another account's) in one write with fn's events and nonce's claim,
// like Update for a campaign, and returns the record as written and the
// events as they will be published.
func (s *Store) UpdateDocument(ctx context.Context, accountID, documentID string, nonce Nonce, fn func(r *Record) ([]events.Event, error)) (Record, []events.Message, error) {
	var out Record
	msgs, err := s.modify(ctx, documentID, nonce, func(d *documentDoc) ([]events.Event, error) {
		if d.Deleted || d.AccountID != accountID {
			return nil, campaign.ErrNotFound
		}
		r := d.record()
		evs, err := fn(&r)
		if err != nil {
			return nil, err
		}
		for i := range r.Campaigns {
			r.Campaigns[i].Consent = r.Consent
			r.Campaigns[i].Refresh()
		}
		d.apply(r)
		out = r
		return evs, nil
	})
	if err != nil {
		return Record{}, nil, err
	}
	return out, msgs, nil
}

// ReadDocument returns the record of documentID as account sees it, like
// UpdateDocument but without writing.
func (s *Store) ReadDocument(ctx context.Context, accountID, documentID string) (Record, error) {
	d, err := s.record(ctx, documentID)
	if err != nil {
		return Record{}, err
	}
	if d.Deleted || d.AccountID != accountID {
		return Record{}, campaign.ErrNotFound
	}
	return d.record(), nil
}

// Consent returns the consent of documentID whatever its account (the
// state the consent topic publishes), NewConsent's when the document has
// no record.
func (s *Store) Consent(ctx context.Context, documentID string) (events.Consent, error) {
	d, err := s.record(ctx, documentID)
	if errors.Is(err, campaign.ErrNotFound) {
		return events.NewConsent(), nil
	}
	if err != nil {
		return events.Consent{}, err
	}
	return d.consent(), nil
}

// Document returns documentID as account sees it: campaign.ErrNotFound
// when it does not exist, was deleted, or belongs to another account.
func (s *Store) Document(ctx context.Context, accountID, documentID string) (campaign.Document, error) {
	d, err := s.AnyDocument(ctx, documentID)
	if err != nil {
		return d, err
	}
	if d.Deleted || d.AccountID != accountID {
		return campaign.Document{}, campaign.ErrNotFound
	}
	return d, nil
}

// AnyDocument returns documentID whatever its account, deleted ones too.
func (s *Store) AnyDocument(ctx context.Context, documentID string) (campaign.Document, error) {
	d, err := s.record(ctx, documentID)
	if err != nil {
		return campaign.Document{}, err
	}
	return d.document(), nil
}

// ApplyDocument stores doc if its version is newer than the one held (or
// none is held) and reports whether it did. Concurrent applies of one
// document are serialized in the process, and the version compare-and-set
// in the filter orders them across replicas, so an update is applied once
// however often it is delivered, and a newer one is never overwritten.
func (s *Store) ApplyDocument(ctx context.Context, doc campaign.Document, now time.Time) (bool, error) {
	unlock, err := s.locks.Lock(ctx, "document/"+doc.ID)
	if err != nil {
		return false, err
	}
	defer unlock()
	var loan *loanDoc
	if doc.Loan != nil {
		loan = &loanDoc{Status: doc.Loan.Status}
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := retryPause(ctx, attempt); err != nil {
				break
			}
		}
		held, err := s.AnyDocument(ctx, doc.ID)
		switch {
		case errors.Is(err, campaign.ErrNotFound):
			// Not held yet: insert. Another replica inserting it
			// meanwhile makes this a compare-and-set lost: read again.
			at := now.UTC()
			_, err := s.documents.InsertOne(ctx, documentDoc{ID: doc.ID, AccountID: doc.AccountID, Loan: loan, Borrower: borrowerOf(doc.Borrower),
				Version: doc.Version, UpdatedAt: at, CreatedAt: &at, Revision: 1})
			if mongox.IsDuplicateKey(err) {
				continue
			}
			if err != nil {
				return false, fmt.Errorf("apply document %s v%d: %w", doc.ID, doc.Version, mongox.Classify(err))
			}
			return true, nil
		case err != nil:
			return false, err
		case doc.Version <= held.Version:
			return false, nil
		}
		// Set the fields, keeping what the platform holds of the
		// document; only if no other replica applied a version meanwhile.
		// The revision rises too: a command that read the loan before
		// this write loses its compare-and-set and reads it again.
		res, err := s.documents.UpdateOne(ctx,
			byRevision(doc.ID, "version", held.Version),
			bson.D{{Key: "$set", Value: bson.D{
				{Key: "accountId", Value: doc.AccountID}, {Key: "loan", Value: loan}, {Key: "borrower", Value: borrowerOf(doc.Borrower)},
				{Key: "version", Value: doc.Version},
				{Key: "deleted", Value: false}, {Key: "updatedAt", Value: now.UTC()},
			}}, {Key: "$inc", Value: bson.D{{Key: "revision", Value: 1}}}})
		if err != nil {
			return false, fmt.Errorf("apply document %s v%d: %w", doc.ID, doc.Version, mongox.Classify(err))
		}
		if res.MatchedCount == 1 {
			return true, nil
		}
	}
	return false, fmt.Errorf("apply document %s v%d: %w", doc.ID, doc.Version, ErrConflict)
}

// DeleteDocument marks documentID deleted (a tombstone), keeping its
// version so that only a newer version brings it back. It reports whether
// the document was held and not yet deleted.
func (s *Store) DeleteDocument(ctx context.Context, documentID string, now time.Time) (bool, error) {
	unlock, err := s.locks.Lock(ctx, "document/"+documentID)
	if err != nil {
		return false, err
	}
	defer unlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := retryPause(ctx, attempt); err != nil {
				break
			}
		}
		held, err := s.AnyDocument(ctx, documentID)
		if errors.Is(err, campaign.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if held.Deleted {
			return false, nil
		}
		res, err := s.documents.UpdateOne(ctx, byRevision(documentID, "version", held.Version),
			bson.D{{Key: "$set", Value: bson.D{{Key: "deleted", Value: true}, {Key: "updatedAt", Value: now.UTC()}}},
				{Key: "$inc", Value: bson.D{{Key: "revision", Value: 1}}}})
		if err != nil {
			return false, fmt.Errorf("delete document %s: %w", documentID, mongox.Classify(err))
		}
		if res.MatchedCount == 1 {
			return true, nil
		}
	}
	return false, fmt.Errorf("delete document %s: %w", documentID, ErrConflict)
}
