// Package store keeps campaigns and the documents read model in MongoDB.
// Every command is one single-document write that changes a campaign and
// appends its events to that document's outbox, so state and event can
// never part. Writes to one campaign or one document are serialized by a
// per-key lock in the process, and every write that replaces what it read
// carries a compare-and-set of the revision (or version) in its filter, so
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
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"github.com/rcm-platform/rcm/services/campaign/internal/keylock"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Collection names.
const (
	CampaignsCollection = "campaigns"
	DocumentsCollection = "documents"
)

// ErrConflict means the document kept changing between read and write
// until the write's context ended; the caller may try again.
var ErrConflict = errors.New("campaign changed concurrently")

// ErrExists means a campaign with that id was already written: a retried
// start whose first attempt wrote it.
var ErrExists = errors.New("campaign already exists")

// Store is the campaign service's MongoDB store.
type Store struct {
	campaigns *mongo.Collection
	documents *mongo.Collection
	locks     *keylock.Map
}

// New returns a Store on db.
func New(db *mongo.Database) *Store {
	return &Store{
		campaigns: db.Collection(CampaignsCollection),
		documents: db.Collection(DocumentsCollection),
		locks:     keylock.New(),
	}
}

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
	// Reads go by _id (the document's campaign list); the sweep's query
	// for pending events is the one other.
	err := mongox.EnsureIndexes(ctx, s.campaigns,
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

type campaignDoc struct {
	ID             string      `bson:"_id"`
	AccountID      string      `bson:"accountId"`
	DocumentID     string      `bson:"documentId"`
	SMS            bool        `bson:"sms"`
	Email          bool        `bson:"email"`
	Call           bool        `bson:"call"`
	Tone           string      `bson:"tone"`
	Cadence        string      `bson:"cadence"`
	Notes          string      `bson:"notes,omitempty"`
	Active         bool        `bson:"active"`
	ActiveChannels []string    `bson:"activeChannels"`
	OptOuts        []optOutDoc `bson:"optOuts"`
	CreatedBy      string      `bson:"createdBy"`
	CreatedAt      time.Time   `bson:"createdAt"`
	UpdatedAt      time.Time   `bson:"updatedAt"`
	EndedAt        *time.Time  `bson:"endedAt,omitempty"`
	EndReason      string      `bson:"endReason,omitempty"`
	Revision       int64       `bson:"revision"`
	Outbox         []outboxDoc `bson:"outbox"`
}

func toDoc(c campaign.Campaign) campaignDoc {
	d := campaignDoc{
		ID: c.ID, AccountID: c.AccountID, DocumentID: c.DocumentID,
		SMS: c.SMS, Email: c.Email, Call: c.Call,
		Tone: c.Tone, Cadence: c.Cadence, Notes: c.Notes,
		Active: c.Active, ActiveChannels: []string{}, OptOuts: []optOutDoc{},
		CreatedBy: c.CreatedBy, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
		EndReason: c.EndReason, Outbox: []outboxDoc{},
	}
	for _, ch := range c.ActiveChannels {
		d.ActiveChannels = append(d.ActiveChannels, string(ch))
	}
	for _, o := range c.OptOuts {
		d.OptOuts = append(d.OptOuts, optOutDoc{EventID: o.EventID, Channel: string(o.Channel), Notes: o.Notes, RecordedAt: o.RecordedAt, RequestKey: o.RequestKey})
	}
	if !c.EndedAt.IsZero() {
		t := c.EndedAt
		d.EndedAt = &t
	}
	return d
}

func (d campaignDoc) campaign() campaign.Campaign {
	c := campaign.Campaign{
		ID: d.ID, AccountID: d.AccountID, DocumentID: d.DocumentID,
		SMS: d.SMS, Email: d.Email, Call: d.Call,
		Tone: d.Tone, Cadence: d.Cadence, Notes: d.Notes,
		Active: d.Active, CreatedBy: d.CreatedBy,
		CreatedAt: d.CreatedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(), EndReason: d.EndReason,
	}
	for _, ch := range d.ActiveChannels {
		c.ActiveChannels = append(c.ActiveChannels, campaign.Channel(ch))
	}
	for _, o := range d.OptOuts {
		c.OptOuts = append(c.OptOuts, campaign.OptOut{EventID: o.EventID, Channel: campaign.Channel(o.Channel), Notes: o.Notes, RecordedAt: o.RecordedAt.UTC(), RequestKey: o.RequestKey})
	}
	if d.EndedAt != nil {
		c.EndedAt = d.EndedAt.UTC()
	}
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

// Create inserts a new campaign with its campaign_started event in the
// outbox, in one write, and returns the event as it will be published.
func (s *Store) Create(ctx context.Context, c campaign.Campaign, e events.Event) (events.Message, error) {
	outbox, msgs, err := outboxOf(ctx, []events.Event{e})
	if err != nil {
		return events.Message{}, err
	}
	if err := s.addCampaign(ctx, c.DocumentID, c.ID); err != nil {
		return events.Message{}, err
	}
	d := toDoc(c)
	d.Outbox = outbox
	_, err = s.campaigns.InsertOne(ctx, d)
	if mongox.IsDuplicateKey(err) {
		return events.Message{}, fmt.Errorf("insert campaign %s: %w", c.ID, ErrExists)
	}
	if err != nil {
		return events.Message{}, fmt.Errorf("insert campaign %s: %w", c.ID, mongox.Classify(err))
	}
	return msgs[0], nil
}

// Get returns the campaign id of account, or campaign.ErrNotFound when it
// does not exist or belongs to another account: the two are
// indistinguishable.
func (s *Store) Get(ctx context.Context, accountID, id string) (campaign.Campaign, error) {
	d, err := s.get(ctx, id)
	if err != nil {
		return campaign.Campaign{}, err
	}
	if d.AccountID != accountID {
		return campaign.Campaign{}, campaign.ErrNotFound
	}
	return d.campaign(), nil
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

// Mutation changes a campaign and returns the events the change produced.
// Returning an error leaves the campaign unchanged.
type Mutation func(c *campaign.Campaign) ([]events.Event, error)

// Update applies fn to the campaign id of account in one write that also
// appends fn's events to the outbox, and returns the updated campaign and
// the events as they will be published. Writes to one campaign are
// serialized in the process; the revision compare-and-set in the filter
// catches a writer in another process, and fn is then run again on the
// fresh state, until ctx ends (then ErrConflict).
func (s *Store) Update(ctx context.Context, accountID, id string, fn Mutation) (campaign.Campaign, []events.Message, error) {
	unlock, err := s.locks.Lock(ctx, "campaign/"+id)
	if err != nil {
		return campaign.Campaign{}, nil, err
	}
	defer unlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := retryPause(ctx, attempt); err != nil {
				break
			}
		}
		d, err := s.get(ctx, id)
		if err != nil {
			return campaign.Campaign{}, nil, err
		}
		if d.AccountID != accountID {
			return campaign.Campaign{}, nil, campaign.ErrNotFound
		}
		c := d.campaign()
		evs, err := fn(&c)
		if err != nil {
			return campaign.Campaign{}, nil, err
		}
		if len(evs) == 0 {
			return c, nil, nil
		}
		outbox, msgs, err := outboxOf(ctx, evs)
		if err != nil {
			return campaign.Campaign{}, nil, err
		}
		next := toDoc(c)
		res, err := s.campaigns.UpdateOne(ctx,
			byRevision(id, "revision", d.Revision),
			bson.D{
				{Key: "$set", Value: bson.D{
					{Key: "active", Value: next.Active},
					{Key: "activeChannels", Value: next.ActiveChannels},
					{Key: "optOuts", Value: next.OptOuts},
					{Key: "updatedAt", Value: next.UpdatedAt},
					{Key: "endedAt", Value: next.EndedAt},
					{Key: "endReason", Value: next.EndReason},
					{Key: "revision", Value: d.Revision + 1},
				}},
				{Key: "$push", Value: bson.D{{Key: "outbox", Value: bson.D{{Key: "$each", Value: outbox}}}}},
			})
		if err != nil {
			return campaign.Campaign{}, nil, fmt.Errorf("update campaign %s: %w", id, mongox.Classify(err))
		}
		if res.MatchedCount == 1 {
			return c, msgs, nil
		}
	}
	return campaign.Campaign{}, nil, fmt.Errorf("update campaign %s: %w", id, ErrConflict)
}

// ListByDocument returns up to limit campaigns of account on documentID,
// newest first, starting after the campaign id before ("" for the first
// page). It reads the document's campaign list and each campaign by _id.
func (s *Store) ListByDocument(ctx context.Context, accountID, documentID, before string, limit int) ([]campaign.Campaign, error) {
	ids, err := s.campaignIDs(ctx, documentID)
	if err != nil {
		return nil, err
	}
	end := len(ids)
	if before != "" {
		end = slices.Index(ids, before)
		if end < 0 {
			return nil, nil
		}
	}
	out := make([]campaign.Campaign, 0, min(limit, end))
	for i := end - 1; i >= 0 && len(out) < limit; i-- {
		d, err := s.get(ctx, ids[i])
		if errors.Is(err, campaign.ErrNotFound) {
			continue // listed by a start that failed before its write
		}
		if err != nil {
			return nil, err
		}
		if d.AccountID == accountID {
			out = append(out, d.campaign())
		}
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
	some, err := s.ListByDocument(ctx, accountID, documentID, "", 1)
	return len(some) > 0, err
}

// ActiveOnDocument returns the active campaigns on documentID, whatever
// their account.
func (s *Store) ActiveOnDocument(ctx context.Context, documentID string) ([]campaign.Campaign, error) {
	ids, err := s.campaignIDs(ctx, documentID)
	if err != nil {
		return nil, err
	}
	var out []campaign.Campaign
	for _, id := range ids {
		d, err := s.get(ctx, id)
		if errors.Is(err, campaign.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if d.Active {
			out = append(out, campaign.Campaign{ID: d.ID, AccountID: d.AccountID, DocumentID: d.DocumentID})
		}
	}
	return out, nil
}
