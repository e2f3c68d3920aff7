package auditlog

import (
	"fmt"

	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// Collections of the compliance database.
const (
	EntriesCollection = "entries"
	HeadsCollection   = "entry_heads"
	// LinkField is the stored field seqlog chains on.
	LinkField = "hash"
)

// Doc is an entry as stored: _id is seqlog.Key(accountId, seq), and data is
// the event's JSON data as an embedded document, so the store can be read
// and queried without decoding strings.
type Doc struct {
	ID         string `bson:"_id"`
	EventID    string `bson:"eventId"`
	AccountID  string `bson:"accountId"`
	Seq        int64  `bson:"seq"`
	EventType  string `bson:"eventType"`
	DocumentID string `bson:"documentId"`
	CampaignID string `bson:"campaignId"`
	Actor      Actor  `bson:"actor"`
	Data       bson.D `bson:"data"`
	OccurredAt string `bson:"occurredAt"`
	RecordedAt string `bson:"recordedAt"`
	PrevHash   string `bson:"prevHash"`
	Hash       string `bson:"hash"`
}

// ToDoc returns e as stored.
func ToDoc(e Entry) (Doc, error) {
	var data bson.D
	if err := bson.UnmarshalExtJSON(e.Data, false, &data); err != nil {
		return Doc{}, fmt.Errorf("entry %d data: %w", e.Seq, err)
	}
	return Doc{
		ID: seqlog.Key(e.AccountID, e.Seq), EventID: e.EventID, AccountID: e.AccountID, Seq: e.Seq,
		EventType: e.EventType, DocumentID: e.DocumentID, CampaignID: e.CampaignID, Actor: e.Actor,
		Data: data, OccurredAt: e.OccurredAt, RecordedAt: e.RecordedAt, PrevHash: e.PrevHash, Hash: e.Hash,
	}, nil
}

// Entry returns the stored document as an entry, exactly as stored: a
// document edited in the store comes back edited, for Verify to catch.
func (d Doc) Entry() (Entry, error) {
	data, err := bson.MarshalExtJSON(d.Data, false, false)
	if err != nil {
		return Entry{}, fmt.Errorf("entry %s data: %w", d.ID, err)
	}
	return Entry{
		EventID: d.EventID, AccountID: d.AccountID, Seq: d.Seq, EventType: d.EventType,
		DocumentID: d.DocumentID, CampaignID: d.CampaignID, Actor: d.Actor, Data: data,
		OccurredAt: d.OccurredAt, RecordedAt: d.RecordedAt, PrevHash: d.PrevHash, Hash: d.Hash,
	}, nil
}
