package bench

import (
	"context"
	"time"

	"github.com/rcm-platform/rcm/dev/campaignseed"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Where the services keep their data, and where the raw baselines write.
const (
	complianceDB       = "rcm_compliance"
	scratchDB          = "rcmbench_scratch"
	benchTone          = "professional and empathetic"
	benchCadence       = "day 1, day 5, day 14"
	benchNotes         = "Borrower previously responded well to SMS outreach."
	growthProbeEntries = 100
)

// startedEvent is a valid campaign_started event of account on doc, as
// the campaign service emits it.
func startedEvent(gen *ids.Generator, account, doc string, at time.Time) events.Event {
	now := events.FormatTime(at)
	e := events.Event{
		EventID:    gen.New(ids.EventPrefix),
		EventType:  events.TypeCampaignStarted,
		AccountID:  account,
		DocumentID: doc,
		CampaignID: gen.New(ids.CampaignPrefix),
		Actor:      events.Actor{Type: events.ActorUser, ID: account, SessionID: "sess_bench"},
		OccurredAt: now,
	}
	e.Campaign = &events.CampaignRecord{
		ID: e.CampaignID, DocumentID: doc, SMS: true, Email: true, Tone: benchTone, Cadence: benchCadence, Notes: benchNotes,
		Active: true, ActiveChannels: []string{"sms", "email"}, Suppressed: []events.SuppressedChannel{}, OptOuts: []events.OptOutRecord{},
		CreatedBy: account, CreatedAt: now, UpdatedAt: now,
	}
	return e
}

// seedCampaign is the campaign of e as campaignseed stores it.
func seedCampaign(e events.Event) (campaignseed.Campaign, error) {
	at, err := e.Time()
	if err != nil {
		return campaignseed.Campaign{}, err
	}
	c := e.Campaign
	return campaignseed.Campaign{
		ID: c.ID, AccountID: e.AccountID, DocumentID: c.DocumentID, SMS: c.SMS, Email: c.Email, Call: c.Call,
		Tone: c.Tone, Cadence: c.Cadence, Notes: c.Notes, CreatedBy: c.CreatedBy, CreatedAt: at,
	}, nil
}

// pendingRecord is the record of a BEHIND document on which e started a
// campaign, its event still in the outbox: what a start writes, as the
// campaign service stores it.
func pendingRecord(e events.Event) (bson.D, error) {
	c, err := seedCampaign(e)
	if err != nil {
		return nil, err
	}
	m, err := events.NewMessage(e, "")
	if err != nil {
		return nil, err
	}
	return campaignseed.Record(campaignseed.Document{
		ID: e.DocumentID, AccountID: e.AccountID, LoanStatus: "BEHIND", Version: 1, UpdatedAt: c.CreatedAt,
		Campaigns: []campaignseed.Campaign{c}, Outbox: []events.Message{m},
	}), nil
}

// ensureRecordIndexes creates the index the campaign service creates on
// its documents' records (services/campaign/internal/store:
// EnsureIndexes), so that a raw insert pays for the same index.
func ensureRecordIndexes(ctx context.Context, coll *mongo.Collection) error {
	return mongox.EnsureIndexes(ctx, coll, mongox.Index{Keys: bson.D{{Key: "outbox.id", Value: 1}}})
}

// ensureEntryIndexes creates the unique indexes the compliance log
// creates (pkg/seqlog), so that a raw insert pays for the same checks.
func ensureEntryIndexes(ctx context.Context, coll *mongo.Collection) error {
	return mongox.EnsureIndexes(ctx, coll,
		mongox.Index{Keys: bson.D{{Key: seqlog.FieldAccount, Value: 1}, {Key: seqlog.FieldEventID, Value: 1}}, Options: options.Index().SetUnique(true)},
		mongox.Index{Keys: bson.D{{Key: seqlog.FieldAccount, Value: 1}, {Key: seqlog.FieldSeq, Value: 1}}, Options: options.Index().SetUnique(true)},
	)
}
