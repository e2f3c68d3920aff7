package bench

import (
	"context"
	"encoding/json"
	"time"

	"github.com/rcm-platform/rcm/pkg/auditlog"
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
	campaignDB         = "rcm_campaign"
	campaignsColl      = "campaigns"
	documentsColl      = "documents"
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
		Active: true, ActiveChannels: []string{"sms", "email"}, OptOuts: []events.OptOutRecord{},
		CreatedBy: account, CreatedAt: now, UpdatedAt: now,
	}
	return e
}

// campaignDoc is a campaign as the campaign service stores it
// (services/campaign/internal/store: campaignDoc), with the event of its
// start still in the outbox when pending is set, as the service inserts
// it, or already published (an empty outbox) otherwise.
func campaignDoc(e events.Event, pending bool) (bson.D, error) {
	at, err := e.Time()
	if err != nil {
		return nil, err
	}
	outbox := bson.A{}
	if pending {
		m, err := events.NewMessage(e, "")
		if err != nil {
			return nil, err
		}
		outbox = append(outbox, bson.D{
			{Key: "id", Value: m.ID}, {Key: "type", Value: m.Type}, {Key: "accountId", Value: m.AccountID},
			{Key: "subject", Value: m.Subject}, {Key: "time", Value: m.Time}, {Key: "data", Value: string(m.Data)},
		})
	}
	return bson.D{
		{Key: "_id", Value: e.CampaignID},
		{Key: "accountId", Value: e.AccountID},
		{Key: "documentId", Value: e.DocumentID},
		{Key: "sms", Value: true}, {Key: "email", Value: true}, {Key: "call", Value: false},
		{Key: "tone", Value: benchTone}, {Key: "cadence", Value: benchCadence}, {Key: "notes", Value: benchNotes},
		{Key: "active", Value: true},
		{Key: "activeChannels", Value: bson.A{"sms", "email"}},
		{Key: "optOuts", Value: bson.A{}},
		{Key: "createdBy", Value: e.AccountID},
		{Key: "createdAt", Value: at}, {Key: "updatedAt", Value: at},
		{Key: "revision", Value: int64(0)},
		{Key: "outbox", Value: outbox},
	}, nil
}

// ensureCampaignIndexes creates the index the campaign service creates on
// its collection (services/campaign/internal/store: EnsureIndexes), so
// that a raw insert pays for the same index.
func ensureCampaignIndexes(ctx context.Context, coll *mongo.Collection) error {
	return mongox.EnsureIndexes(ctx, coll, mongox.Index{Keys: bson.D{{Key: "outbox.id", Value: 1}}})
}

// documentDoc is a document of the campaign service's read model
// (services/campaign/internal/store: documentDoc): a BEHIND loan, and the
// ids of its campaigns in creation order.
func documentDoc(id, account string, campaignIDs []string, at time.Time) bson.D {
	return bson.D{
		{Key: "_id", Value: id}, {Key: "accountId", Value: account},
		{Key: "loan", Value: bson.D{{Key: "status", Value: "BEHIND"}}},
		{Key: "version", Value: int64(1)}, {Key: "deleted", Value: false}, {Key: "updatedAt", Value: at},
		{Key: "campaignIds", Value: campaignIDs},
	}
}

// chain returns the compliance entries of evs, all of one account,
// numbered from seq 1 and hash-chained, as the compliance service stores
// them (pkg/auditlog.Doc with _id = seqlog.Key).
func chain(evs []events.Event, recordedAt time.Time) ([]any, string, error) {
	docs := make([]any, 0, len(evs))
	prev := auditlog.GenesisHash
	rec := events.FormatTime(recordedAt)
	for i, e := range evs {
		data, err := json.Marshal(e)
		if err != nil {
			return nil, "", err
		}
		entry := auditlog.Entry{
			EventID: e.EventID, AccountID: e.AccountID, Seq: int64(i + 1), EventType: e.EventType,
			DocumentID: e.DocumentID, CampaignID: e.CampaignID,
			Actor: auditlog.Actor{Type: e.Actor.Type, ID: e.Actor.ID, SessionID: e.Actor.SessionID},
			Data:  data, OccurredAt: e.OccurredAt, RecordedAt: rec,
		}
		if err := auditlog.Seal(&entry, prev); err != nil {
			return nil, "", err
		}
		doc, err := auditlog.ToDoc(entry, seqlog.Key(entry.AccountID, entry.Seq))
		if err != nil {
			return nil, "", err
		}
		docs = append(docs, doc)
		prev = entry.Hash
	}
	return docs, prev, nil
}

// ensureEntryIndexes creates the unique indexes the compliance log
// creates (pkg/seqlog), so that a raw insert pays for the same checks.
func ensureEntryIndexes(ctx context.Context, coll *mongo.Collection) error {
	return mongox.EnsureIndexes(ctx, coll,
		mongox.Index{Keys: bson.D{{Key: seqlog.FieldAccount, Value: 1}, {Key: seqlog.FieldEventID, Value: 1}}, Options: options.Index().SetUnique(true)},
		mongox.Index{Keys: bson.D{{Key: seqlog.FieldAccount, Value: 1}, {Key: seqlog.FieldSeq, Value: 1}}, Options: options.Index().SetUnique(true)},
	)
}
