// Package campaignseed builds what the campaign service stores, in its
// own layout (services/campaign/internal/store), so that a benchmark can
// fill the service's database straight through the driver, far faster
// than through its API. The campaign service's store tests write the same
// campaigns through the service and check that these records are exactly
// the ones it wrote, field for field, so the layout cannot drift from the
// service's unnoticed.
package campaignseed

import (
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Where the campaign service keeps its data. CampaignsCollection holds
// the static fields of the campaigns started before the records held
// them; the service writes none any more, and neither does a seed.
const (
	Database            = "rcm_campaign"
	CampaignsCollection = "campaigns"
	DocumentsCollection = "documents"
)

// Campaign is a campaign as it was started: active, without opt-outs.
type Campaign struct {
	ID, AccountID, DocumentID string
	SMS, Email, Call          bool
	Tone, Cadence, Notes      string
	CreatedBy                 string
	CreatedAt                 time.Time
}

// Document is a document of the read model, as the service applied it
// from documents.v1, and the campaigns started on it since, oldest first,
// with no consent change or contact attempt recorded.
type Document struct {
	ID, AccountID string
	// LoanStatus is the loan's status, "" for a document without a loan.
	LoanStatus string
	// TimeZone and State are the borrower's, "" when not known.
	TimeZone, State string
	Version         int64
	// UpdatedAt is when the read model applied the document.
	UpdatedAt time.Time
	// CreatedAt is when the read model first applied it, making its
	// record; zero: UpdatedAt.
	CreatedAt time.Time
	Campaigns []Campaign
	// Outbox holds the events of those campaigns still waiting for the
	// relay; empty once it published them all.
	Outbox []events.Message
}

// Record is the document's record in the documents collection: the
// document, each of its campaigns (what changes of it and what does not),
// and its outbox.
func Record(d Document) bson.D {
	var loan any
	if d.LoanStatus != "" {
		loan = bson.D{{Key: "status", Value: d.LoanStatus}}
	}
	rec := bson.D{
		{Key: "_id", Value: d.ID}, {Key: "accountId", Value: d.AccountID},
		{Key: "loan", Value: loan},
		{Key: "version", Value: d.Version}, {Key: "deleted", Value: false}, {Key: "updatedAt", Value: d.UpdatedAt},
	}
	created := d.CreatedAt
	if created.IsZero() {
		created = d.UpdatedAt
	}
	rec = append(rec, bson.E{Key: "createdAt", Value: created})
	if d.TimeZone != "" || d.State != "" {
		var b bson.D
		if d.TimeZone != "" {
			b = append(b, bson.E{Key: "timeZone", Value: d.TimeZone})
		}
		if d.State != "" {
			b = append(b, bson.E{Key: "state", Value: d.State})
		}
		rec = append(rec, bson.E{Key: "borrower", Value: b})
	}
	if len(d.Campaigns) == 0 {
		// As the read model inserted it: no command wrote it yet.
		return append(rec, bson.E{Key: "revision", Value: int64(1)})
	}
	states := make(bson.A, 0, len(d.Campaigns))
	for _, c := range d.Campaigns {
		states = append(states, State(c))
	}
	outbox := make(bson.A, 0, len(d.Outbox))
	for _, m := range d.Outbox {
		outbox = append(outbox, OutboxElement(m))
	}
	// Each start wrote the record once, raising its revision and
	// appending its campaign and event; a start writes no consent,
	// request or attempt.
	return append(rec,
		bson.E{Key: "revision", Value: int64(1 + len(d.Campaigns))},
		bson.E{Key: "campaigns", Value: states},
		bson.E{Key: "outbox", Value: outbox},
	)
}

// State is campaign c's element of its record's campaigns list, as a
// start appends it: what changes of the campaign and what does not.
func State(c Campaign) bson.D {
	st := bson.D{
		{Key: "id", Value: c.ID}, {Key: "accountId", Value: c.AccountID},
		{Key: "sms", Value: c.SMS}, {Key: "email", Value: c.Email}, {Key: "call", Value: c.Call},
		{Key: "active", Value: true}, {Key: "optOuts", Value: bson.A{}},
		{Key: "updatedAt", Value: c.CreatedAt},
		{Key: "tone", Value: c.Tone}, {Key: "cadence", Value: c.Cadence},
	}
	if c.Notes != "" {
		st = append(st, bson.E{Key: "notes", Value: c.Notes})
	}
	return append(st, bson.E{Key: "createdBy", Value: c.CreatedBy}, bson.E{Key: "createdAt", Value: c.CreatedAt})
}

// OutboxElement is event m's element of its record's outbox.
func OutboxElement(m events.Message) bson.D {
	e := bson.D{
		{Key: "id", Value: m.ID}, {Key: "type", Value: m.Type}, {Key: "accountId", Value: m.AccountID},
		{Key: "subject", Value: m.Subject}, {Key: "time", Value: m.Time.UTC().Truncate(time.Millisecond)},
		{Key: "data", Value: string(m.Data)},
	}
	if m.Traceparent != "" {
		e = append(e, bson.E{Key: "traceparent", Value: m.Traceparent})
	}
	return e
}
