// Package store keeps campaigns and the documents read model in MongoDB.
// The document is the consistency boundary: its record (collection
// documents, _id = the document id) holds the document as its owners
// published it, its consent, the changing state of each of its campaigns
// and the outbox of their events. Every command is one write of one
// record that changes its state and appends the command's events to its
// outbox, so state and event can never part; a campaign's static fields
// (collection campaigns) are written once, before the record write that
// makes the campaign exist. Writes to one record are serialized by a
// per-key lock in the process, and every write that replaces what it read
// carries a compare-and-set of the record's revision in its filter, so
// that two replicas never overwrite each other. There is one write path,
// whatever the store.
package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/keylock"
	"github.com/rcm-platform/rcm/services/campaign/internal/nonces"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Collection names.
const (
	CampaignsCollection = "campaigns"
	DocumentsCollection = "documents"
	// NoncesCollection is the nonce store (package nonces): the guard of
	// the commands that do not claim their nonce in a record's write, and
	// of those that find no record to claim it in (see Nonce).
	NoncesCollection = "principal_nonces"
)

// ErrConflict means the record kept changing between read and write
// until the write's context ended; the caller may try again.
var ErrConflict = errors.New("document changed concurrently")

// unwritten marks a failure before a command wrote anything.
type unwritten struct{ error }

func (e unwritten) Unwrap() error { return e.error }

// Unwritten marks err as a failure before the command wrote anything.
func Unwritten(err error) error { return unwritten{err} }

// IsUnwritten reports whether err was marked by Unwritten.
func IsUnwritten(err error) bool {
	var u unwritten
	return errors.As(err, &u)
}

// ErrExists means a campaign with that id was already written: a retried
// start whose first attempt wrote it.
var ErrExists = errors.New("campaign already exists")

// Store is the campaign service's MongoDB store.
type Store struct {
	campaigns *mongo.Collection
	documents *mongo.Collection
	guard     *nonces.Store
	locks     *keylock.Map
	published Published
}

// New returns a Store on db.
func New(db *mongo.Database) *Store {
	return &Store{
		campaigns: db.Collection(CampaignsCollection),
		documents: db.Collection(DocumentsCollection),
		guard:     nonces.New(db.Collection(NoncesCollection), time.Now),
		locks:     keylock.New(),
		published: nonePublished{},
	}
}

// Nonces is the nonce store the store claims nonces in when no record
// takes them (see Nonce): the service's guard of commands.
func (s *Store) Nonces() principal.Nonces { return s.guard }

// byRevision is the filter of a compare-and-set: the document id, with
// field still holding the value read. Every write that replaces what it
// read goes through it, whatever the store and however many replicas run.
func byRevision(id string, field string, value any) bson.D {
	return bson.D{{Key: "_id", Value: id}, {Key: field, Value: value}}
}

// maxAttempts bounds the compare-and-set retries of one write. Each lost
// attempt means another writer won, so the bound is never reached while
// writers make progress; within it, a write retries until its context
// ends rather than answering a conflict.
const maxAttempts = 64

// retryPause waits a little before the next attempt of a lost
// compare-and-set, longer each time, so that two replicas racing on one
// campaign do not keep colliding. It returns ctx's error when ctx ends.
func retryPause(ctx context.Context, attempt int) error {
	d := time.Duration(1+rand.IntN(1+min(attempt, 10)*2)) * time.Millisecond
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// EnsureIndexes creates the indexes the queries rely on.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	// Reads go by _id (a document's record, a campaign's static fields);
	// the sweep's query for pending events is the one other.
	err := mongox.EnsureIndexes(ctx, s.documents,
		mongox.Index{Keys: bson.D{{Key: "outbox.id", Value: 1}}},
	)
	if err != nil {
		return mongox.Classify(err)
	}
	return nil
}

type optOutDoc struct {
	EventID    string    `bson:"eventId"`
	Channel    string    `bson:"channel"`
	Notes      string    `bson:"notes,omitempty"`
	RecordedAt time.Time `bson:"recordedAt"`
	RequestKey string    `bson:"requestKey,omitempty"`
}

// outboxDoc is an event waiting to be published, stored exactly as it will
// be published.
type outboxDoc struct {
	ID          string    `bson:"id"`
	Type        string    `bson:"type"`
	AccountID   string    `bson:"accountId"`
	Subject     string    `bson:"subject"`
	Time        time.Time `bson:"time"`
	Data        string    `bson:"data"`
	Traceparent string    `bson:"traceparent,omitempty"`
}

// campaignDoc is what never changes of a campaign, as the campaigns
// collection holds it for the campaigns started before their document's
// record held it too (see stateDoc); nothing writes it any more. A
// campaign doc without its entry in the record is invisible.
type campaignDoc struct {
	ID         string    `bson:"_id"`
	AccountID  string    `bson:"accountId"`
	DocumentID string    `bson:"documentId"`
	SMS        bool      `bson:"sms"`
	Email      bool      `bson:"email"`
	Call       bool      `bson:"call"`
	Tone       string    `bson:"tone"`
	Cadence    string    `bson:"cadence"`
	Notes      string    `bson:"notes,omitempty"`
	CreatedBy  string    `bson:"createdBy"`
	CreatedAt  time.Time `bson:"createdAt"`
}

// stateDoc is what changes of a campaign, kept in its document's record
// with the document's consent, so that an opt-out changes both in one
// write. It repeats the channels the campaign was started with: the rules
// that read the record need them.
type stateDoc struct {
	ID        string      `bson:"id"`
	AccountID string      `bson:"accountId"`
	SMS       bool        `bson:"sms"`
	Email     bool        `bson:"email"`
	Call      bool        `bson:"call"`
	Active    bool        `bson:"active"`
	OptOuts   []optOutDoc `bson:"optOuts"`
	UpdatedAt time.Time   `bson:"updatedAt"`
	EndedAt   *time.Time  `bson:"endedAt,omitempty"`
	EndReason string      `bson:"endReason,omitempty"`

	// What never changes of the campaign. Campaigns started before the
	// record held it have it in the campaigns collection only.
	Tone      string     `bson:"tone,omitempty"`
	Cadence   string     `bson:"cadence,omitempty"`
	Notes     string     `bson:"notes,omitempty"`
	CreatedBy string     `bson:"createdBy,omitempty"`
	CreatedAt *time.Time `bson:"createdAt,omitempty"`
}

// static reports whether the state holds the campaign's static fields.
func (d stateDoc) static() bool { return d.CreatedAt != nil }

func stateOf(c campaign.Campaign) stateDoc {
	d := stateDoc{
		ID: c.ID, AccountID: c.AccountID, SMS: c.SMS, Email: c.Email, Call: c.Call,
		Active: c.Active, OptOuts: []optOutDoc{}, UpdatedAt: c.UpdatedAt, EndReason: c.EndReason,
	}
	for _, o := range c.OptOuts {
		d.OptOuts = append(d.OptOuts, optOutDoc{EventID: o.EventID, Channel: string(o.Channel), Notes: o.Notes, RecordedAt: o.RecordedAt, RequestKey: o.RequestKey})
	}
	if !c.EndedAt.IsZero() {
		t := c.EndedAt
		d.EndedAt = &t
	}
	if !c.CreatedAt.IsZero() {
		t := c.CreatedAt
		d.Tone, d.Cadence, d.Notes, d.CreatedBy, d.CreatedAt = c.Tone, c.Cadence, c.Notes, c.CreatedBy, &t
	}
	return d
}

// campaign returns the campaign of state d on documentID, its static
// fields those the record holds, else those of static (nil: none), with
// the document's consent.
func (d stateDoc) campaign(documentID string, static *campaignDoc, consent events.Consent) campaign.Campaign {
	c := campaign.Campaign{
		ID: d.ID, AccountID: d.AccountID, DocumentID: documentID,
		SMS: d.SMS, Email: d.Email, Call: d.Call,
		Active: d.Active, UpdatedAt: d.UpdatedAt.UTC(), EndReason: d.EndReason,
		Consent: consent,
	}
	switch {
	case d.static():
		c.Tone, c.Cadence, c.Notes = d.Tone, d.Cadence, d.Notes
		c.CreatedBy, c.CreatedAt = d.CreatedBy, d.CreatedAt.UTC()
	case static != nil:
		c.Tone, c.Cadence, c.Notes = static.Tone, static.Cadence, static.Notes
		c.CreatedBy, c.CreatedAt = static.CreatedBy, static.CreatedAt.UTC()
	}
	for _, o := range d.OptOuts {
		c.OptOuts = append(c.OptOuts, campaign.OptOut{EventID: o.EventID, Channel: campaign.Channel(o.Channel), Notes: o.Notes, RecordedAt: o.RecordedAt.UTC(), RequestKey: o.RequestKey})
	}
	if d.EndedAt != nil {
		c.EndedAt = d.EndedAt.UTC()
	}
	c.Refresh()
	return c
}

func outboxOf(ctx context.Context, evs []events.Event) ([]outboxDoc, []events.Message, error) {
	docs := make([]outboxDoc, 0, len(evs))
	msgs := make([]events.Message, 0, len(evs))
	for _, e := range evs {
		m, err := events.NewMessage(e, events.TraceparentFrom(ctx))
		if err != nil {
			return nil, nil, err
		}
		msgs = append(msgs, m)
		docs = append(docs, outboxElem(m))
	}
	return docs, msgs, nil
}

// outboxElem is m as an outbox element: the same fields in the same order
// every time, so that a removal can name the element by its value.
func outboxElem(m events.Message) outboxDoc {
	return outboxDoc{ID: m.ID, Type: m.Type, AccountID: m.AccountID, Subject: m.Subject,
		Time: m.Time.UTC().Truncate(time.Millisecond), Data: string(m.Data), Traceparent: m.Traceparent}
}

func (o outboxDoc) message() events.Message {
	return events.Message{ID: o.ID, Type: o.Type, AccountID: o.AccountID, Subject: o.Subject, Time: o.Time.UTC(), Data: []byte(o.Data), Traceparent: o.Traceparent}
}

// Create writes a new campaign c with its campaign_started event e into
// its document's record, creating the record if there is none, as Start
// does for a command; the seeds and tests of the store's users use it.
func (s *Store) Create(ctx context.Context, c campaign.Campaign, e events.Event) (campaign.Campaign, events.Message, error) {
	return s.start(ctx, "", c.DocumentID, Nonce{}, func(campaign.Document) (campaign.Campaign, events.Event, error) { return c, e, nil })
}

// Start starts a campaign on documentID as account sees it, in one read
// of the document's record and one write of it: build makes the campaign
// and its campaign_started event from the document as read (the loan
// rule is build's), campaign.Admit fits them to the consent as read, and
// the write appends the campaign, with its static fields, to the record's
// campaigns and its event to the outbox, and claims nonce, under the
// record's revision compare-and-set. A loan update of the document raises
// the revision too, so a start and a loan update are ordered by the store
// whichever lands first: either the start read the new loan, or the loan
// update's consumer finds the started campaign and ends it. ErrExists
// means the campaign was written already (a retried start whose first
// attempt wrote it); campaign.ErrNotFound, build's error and
// campaign.ErrAllRevoked mean nothing was written but the nonce's claim.
func (s *Store) Start(ctx context.Context, accountID, documentID string, nonce Nonce,
	build func(doc campaign.Document) (campaign.Campaign, events.Event, error)) (campaign.Campaign, events.Message, error) {
	return s.start(ctx, accountID, documentID, nonce, build)
}

// start is Start; an empty accountID creates the record if there is none.
func (s *Store) start(ctx context.Context, accountID, documentID string, nonce Nonce,
	build func(doc campaign.Document) (campaign.Campaign, events.Event, error)) (campaign.Campaign, events.Message, error) {
	unlock, err := s.locks.Lock(ctx, "document/"+documentID)
	if err != nil {
		return campaign.Campaign{}, events.Message{}, err
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
		exists := err == nil
		switch {
		case errors.Is(err, campaign.ErrNotFound):
			r = documentDoc{ID: documentID}
		case err != nil:
			// Every write of this start comes after a read.
			return campaign.Campaign{}, events.Message{}, Unwritten(err)
		}
		if err := checkNonce(r, nonce); err != nil {
			return campaign.Campaign{}, events.Message{}, err
		}
		if !guarded && r.young(nonce) {
			if err := s.guardNonce(ctx, nonce); err != nil {
				return campaign.Campaign{}, events.Message{}, err
			}
			guarded = true
		}
		rev := r.Revision
		c, e, err := s.admit(r, accountID, build)
		if err != nil {
			// Nothing to write but the nonce: a replay of this command
			// must be refused even once the rule would let it through.
			if lost, cerr := s.claimOnly(ctx, r, exists, nonce); lost {
				continue
			} else if cerr != nil {
				return campaign.Campaign{}, events.Message{}, cerr
			}
			return campaign.Campaign{}, events.Message{}, err
		}
		outbox, msgs, err := outboxOf(ctx, []events.Event{e})
		if err != nil {
			return campaign.Campaign{}, events.Message{}, err
		}
		st := stateOf(c)
		if !exists {
			created := c.CreatedAt.UTC()
			r.Revision, r.CreatedAt, r.Campaigns, r.Outbox, r.Nonces = 1, &created, []stateDoc{st}, outbox, nonce.claimed(r.Nonces)
			_, err := s.documents.InsertOne(ctx, r)
			if mongox.IsDuplicateKey(err) {
				continue
			}
			if err != nil {
				return campaign.Campaign{}, events.Message{}, fmt.Errorf("write document %s: %w", documentID, mongox.Classify(err))
			}
			return c, msgs[0], nil
		}
		// The campaign is appended, not the list rewritten: the write
		// stays the size of one campaign however many the record holds.
		set := bson.D{{Key: "revision", Value: rev + 1}}
		var push bson.D
		if len(r.Campaigns) == 0 {
			// The list may be stored as null, which takes no $push.
			set = append(set, bson.E{Key: "campaigns", Value: []stateDoc{st}})
		} else {
			push = append(push, bson.E{Key: "campaigns", Value: st})
		}
		set, push, out := s.appendOutbox(r, outbox, set, push)
		set, push = nonce.claim(r.Nonces, set, push)
		res, err := s.documents.UpdateOne(ctx, byRecordRevision(documentID, rev), update(set, push))
		if err != nil {
			return campaign.Campaign{}, events.Message{}, fmt.Errorf("write document %s: %w", documentID, mongox.Classify(err))
		}
		if res.MatchedCount == 1 {
			if len(out) > 0 {
				s.published.TakenOut(documentID, out)
			}
			return c, msgs[0], nil
		}
	}
	return campaign.Campaign{}, events.Message{}, fmt.Errorf("write document %s: %w", documentID, ErrConflict)
}

// admit runs a start's rules on record r as accountID sees it ("": any).
func (s *Store) admit(r documentDoc, accountID string, build func(doc campaign.Document) (campaign.Campaign, events.Event, error)) (campaign.Campaign, events.Event, error) {
	if accountID != "" && (r.Deleted || r.AccountID != accountID) {
		return campaign.Campaign{}, events.Event{}, campaign.ErrNotFound
	}
	c, e, err := build(r.document())
	if err != nil {
		return campaign.Campaign{}, events.Event{}, err
	}
	if r.state(c.ID) >= 0 {
		return campaign.Campaign{}, events.Event{}, fmt.Errorf("insert campaign %s: %w", c.ID, ErrExists)
	}
	return campaign.Admit(c, e, r.consent())
}

// Get returns the campaign id of account on documentID, or
// campaign.ErrNotFound when it does not exist there or belongs to another
// account: the two are indistinguishable.
func (s *Store) Get(ctx context.Context, accountID, documentID, id string) (campaign.Campaign, error) {
	r, err := s.record(ctx, documentID)
	if err != nil {
		return campaign.Campaign{}, err
	}
	i := r.state(id)
	if i < 0 || r.Campaigns[i].AccountID != accountID {
		return campaign.Campaign{}, campaign.ErrNotFound
	}
	static, err := s.staticOf(ctx, r.Campaigns[i])
	if err != nil {
		return campaign.Campaign{}, err
	}
	return r.Campaigns[i].campaign(r.ID, static, r.consent()), nil
}

// staticOf returns the static fields of a campaign whose record does not
// hold them (started before it did), nil when it does.
func (s *Store) staticOf(ctx context.Context, st stateDoc) (*campaignDoc, error) {
	if st.static() {
		return nil, nil
	}
	d, err := s.get(ctx, st.ID)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// get finds by _id alone: the one filter every store serves from an index.
func (s *Store) get(ctx context.Context, id string) (campaignDoc, error) {
	var d campaignDoc
	err := s.campaigns.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return d, campaign.ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("find campaign %s: %w", id, mongox.Classify(err))
	}
	return d, nil
}

// Mutation changes a campaign (and, through c.Consent, its document's
// consent) and returns the events the change produced. Returning an error
// leaves both unchanged.
type Mutation func(c *campaign.Campaign) ([]events.Event, error)

// Update applies fn to the campaign id of account on documentID in one
// write of the document's record, which also writes the document's
// consent as fn left it and appends fn's events to the record's outbox,
// and returns the updated campaign and the events as they will be
// published. Writes to one record are serialized in the process; the
// revision compare-and-set in the filter catches a writer in another
// process, and fn is then run again on the fresh state, until ctx ends
// (then ErrConflict).
func (s *Store) Update(ctx context.Context, accountID, documentID, id string, fn Mutation) (campaign.Campaign, []events.Message, error) {
	var c campaign.Campaign
	var static *campaignDoc
	msgs, err := s.modify(ctx, documentID, Nonce{}, func(r *documentDoc) ([]events.Event, error) {
		i := r.state(id)
		if i < 0 || r.Campaigns[i].AccountID != accountID {
			return nil, campaign.ErrNotFound
		}
		if static == nil && !r.Campaigns[i].static() {
			d, err := s.get(ctx, id)
			if err != nil {
				return nil, err
			}
			static = &d
		}
		c = r.Campaigns[i].campaign(r.ID, static, r.consent())
		evs, err := fn(&c)
		if err != nil {
			return nil, err
		}
		c.Refresh()
		r.Campaigns[i] = stateOf(c)
		r.Consent = consentDocOf(c.Consent)
		return evs, nil
	})
	if err != nil {
		return campaign.Campaign{}, nil, err
	}
	return c, msgs, nil
}

// ListByDocument returns up to limit campaigns of account on documentID,
// newest first, starting after the campaign id before ("" for the first
// page). It reads the document's record (and, for a campaign started
// before the record held its static fields, the campaign by _id).
func (s *Store) ListByDocument(ctx context.Context, accountID, documentID, before string, limit int) ([]campaign.Campaign, error) {
	r, err := s.record(ctx, documentID)
	if errors.Is(err, campaign.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	end := len(r.Campaigns)
	if before != "" {
		end = r.state(before)
		if end < 0 {
			return nil, nil
		}
	}
	consent := r.consent()
	out := make([]campaign.Campaign, 0, min(limit, end))
	for i := end - 1; i >= 0 && len(out) < limit; i-- {
		st := r.Campaigns[i]
		if st.AccountID != accountID {
			continue
		}
		static, err := s.staticOf(ctx, st)
		if err != nil {
			return nil, err
		}
		out = append(out, st.campaign(r.ID, static, consent))
	}
	return out, nil
}

// Page is one page of a document's campaigns, newest first.
type Page struct {
	Campaigns []campaign.Campaign
	// Next is the cursor of the next page (the last campaign's id), ""
	// on the last page.
	Next string
}

// PageByDocument returns up to limit campaigns of account on documentID,
// newest first, after the campaign id cursor ("" for the first page), and
// the cursor of the next page.
func (s *Store) PageByDocument(ctx context.Context, accountID, documentID, cursor string, limit int) (Page, error) {
	cs, err := s.ListByDocument(ctx, accountID, documentID, cursor, limit+1)
	if err != nil {
		return Page{}, err
	}
	p := Page{Campaigns: cs}
	if len(cs) > limit {
		p.Campaigns = cs[:limit]
		p.Next = cs[limit-1].ID
	}
	return p, nil
}

// HasCampaigns reports whether account has any campaign on documentID.
func (s *Store) HasCampaigns(ctx context.Context, accountID, documentID string) (bool, error) {
	r, err := s.record(ctx, documentID)
	if errors.Is(err, campaign.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(r.Campaigns, func(st stateDoc) bool { return st.AccountID == accountID }), nil
}

// ActiveOnDocument returns the active campaigns on documentID, whatever
// their account, as its record holds them (no static fields).
func (s *Store) ActiveOnDocument(ctx context.Context, documentID string) ([]campaign.Campaign, error) {
	r, err := s.record(ctx, documentID)
	if errors.Is(err, campaign.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []campaign.Campaign
	for _, st := range r.Campaigns {
		if st.Active {
			out = append(out, st.campaign(r.ID, nil, r.consent()))
		}
	}
	return out, nil
}
