package auditlog

import (
	"encoding/json"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Collections of the compliance database.
const (
	EntriesCollection = "entries"
	HeadsCollection   = "entry_heads"
	// LinkField is the stored field seqlog chains on.
	LinkField = "hash"
)

// Doc is an entry as stored: _id is seqlog.Key(accountId, seq), the
// store's key, which the caller gives ToDoc so that this package links no
// database client; data is the event's JSON data as a string holding
// exactly the bytes that were hashed, so that no conversion between JSON and BSON can change it (one
// would turn {"$numberLong": "5"} into 5, and rewrite 1e21 as 1E+21).
// Entries stored before held data as an embedded document; Entry reads
// both.
type Doc struct {
	ID         string        `bson:"_id"`
	EventID    string        `bson:"eventId"`
	AccountID  string        `bson:"accountId"`
	Seq        int64         `bson:"seq"`
	EventType  string        `bson:"eventType"`
	DocumentID string        `bson:"documentId"`
	CampaignID string        `bson:"campaignId"`
	Actor      Actor         `bson:"actor"`
	Data       bson.RawValue `bson:"data"`
	OccurredAt string        `bson:"occurredAt"`
	RecordedAt string        `bson:"recordedAt"`
	PrevHash   string        `bson:"prevHash"`
	Hash       string        `bson:"hash"`
}

// ToDoc returns e as stored under the _id id, seqlog.Key(e.AccountID, e.Seq).
func ToDoc(e Entry, id string) (Doc, error) {
	if !json.Valid(e.Data) {
		return Doc{}, fmt.Errorf("entry %d data: not valid JSON", e.Seq)
	}
	t, data, err := bson.MarshalValue(string(e.Data))
	if err != nil {
		return Doc{}, fmt.Errorf("entry %d data: %w", e.Seq, err)
	}
	return Doc{
		ID: id, EventID: e.EventID, AccountID: e.AccountID, Seq: e.Seq,
		EventType: e.EventType, DocumentID: e.DocumentID, CampaignID: e.CampaignID, Actor: e.Actor,
		Data: bson.RawValue{Type: t, Value: data}, OccurredAt: e.OccurredAt, RecordedAt: e.RecordedAt,
		PrevHash: e.PrevHash, Hash: e.Hash,
	}, nil
}

// Entry returns the stored document as an entry, exactly as stored: a
// document edited in the store comes back edited, for Verify to catch.
func (d Doc) Entry() (Entry, error) {
	var data []byte
	switch d.Data.Type {
	case bson.TypeString:
		data = []byte(d.Data.StringValue())
	case bson.TypeEmbeddedDocument:
		// The form of entries stored before data was kept as its text.
		var doc bson.D
		if err := d.Data.Unmarshal(&doc); err != nil {
			return Entry{}, fmt.Errorf("entry %s data: %w", d.ID, err)
		}
		var err error
		if data, err = bson.MarshalExtJSON(doc, false, false); err != nil {
			return Entry{}, fmt.Errorf("entry %s data: %w", d.ID, err)
		}
	default:
		// Not what any writer stores: hashed as null, it breaks the chain
		// here rather than the read.
		data = []byte("null")
	}
	return Entry{
		EventID: d.EventID, AccountID: d.AccountID, Seq: d.Seq, EventType: d.EventType,
		DocumentID: d.DocumentID, CampaignID: d.CampaignID, Actor: d.Actor, Data: data,
		OccurredAt: d.OccurredAt, RecordedAt: d.RecordedAt, PrevHash: d.PrevHash, Hash: d.Hash,
	}, nil
}
