package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/services/campaign/internal/campaign"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
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

type documentDoc struct {
	ID        string    `bson:"_id"`
	AccountID string    `bson:"accountId"`
	Loan      *loanDoc  `bson:"loan"`
	Version   int64     `bson:"version"`
	Deleted   bool      `bson:"deleted"`
	UpdatedAt time.Time `bson:"updatedAt"`

	Borrower *borrowerDoc `bson:"borrower,omitempty"`
	// CampaignIDs lists the document's campaigns in creation order: the
	// index the list and the end of campaigns read by _id, instead of a
	// query the embedded store would answer with a scan. An id is added
	// before its campaign is written, so the list may name a campaign
	// that a failed start never wrote, never the other way round.
	// Each id is listed once ($addToSet).
	CampaignIDs []string `bson:"campaignIds,omitempty"`
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
	var d documentDoc
	err := s.documents.FindOne(ctx, bson.D{{Key: "_id", Value: documentID}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return campaign.Document{}, campaign.ErrNotFound
	}
	if err != nil {
		return campaign.Document{}, fmt.Errorf("find document %s: %w", documentID, mongox.Classify(err))
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
			_, err := s.documents.InsertOne(ctx, documentDoc{ID: doc.ID, AccountID: doc.AccountID, Loan: loan, Borrower: borrowerOf(doc.Borrower), Version: doc.Version, UpdatedAt: now.UTC()})
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
		// Set the fields, keeping the campaign list; only if no other
		// replica applied a version meanwhile.
		res, err := s.documents.UpdateOne(ctx,
			byRevision(doc.ID, "version", held.Version),
			bson.D{{Key: "$set", Value: bson.D{
				{Key: "accountId", Value: doc.AccountID}, {Key: "loan", Value: loan}, {Key: "borrower", Value: borrowerOf(doc.Borrower)},
				{Key: "version", Value: doc.Version},
				{Key: "deleted", Value: false}, {Key: "updatedAt", Value: now.UTC()},
			}}})
		if err != nil {
			return false, fmt.Errorf("apply document %s v%d: %w", doc.ID, doc.Version, mongox.Classify(err))
		}
		if res.MatchedCount == 1 {
			return true, nil
		}
	}
	return false, fmt.Errorf("apply document %s v%d: %w", doc.ID, doc.Version, ErrConflict)
}

// addCampaign records campaignID in its document's campaign list, once
// however often a start is retried. It takes the document's lock, so that
// one process sends one update of a document at a time.
func (s *Store) addCampaign(ctx context.Context, documentID, campaignID string) error {
	unlock, err := s.locks.Lock(ctx, "document/"+documentID)
	if err != nil {
		return err
	}
	defer unlock()
	// Upsert: a document the read model has not seen yet gets its list
	// first and its fields when its update arrives (version 0 is older
	// than any).
	_, err = s.documents.UpdateOne(ctx, bson.D{{Key: "_id", Value: documentID}},
		bson.D{{Key: "$addToSet", Value: bson.D{{Key: "campaignIds", Value: campaignID}}}},
		options.UpdateOne().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("index campaign %s on %s: %w", campaignID, documentID, mongox.Classify(err))
	}
	return nil
}

// campaignIDs returns the ids of documentID's campaigns, oldest first.
func (s *Store) campaignIDs(ctx context.Context, documentID string) ([]string, error) {
	var d documentDoc
	err := s.documents.FindOne(ctx, bson.D{{Key: "_id", Value: documentID}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("campaigns of %s: %w", documentID, mongox.Classify(err))
	}
	return d.CampaignIDs, nil
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
			bson.D{{Key: "$set", Value: bson.D{{Key: "deleted", Value: true}, {Key: "updatedAt", Value: now.UTC()}}}})
		if err != nil {
			return false, fmt.Errorf("delete document %s: %w", documentID, mongox.Classify(err))
		}
		if res.MatchedCount == 1 {
			return true, nil
		}
	}
	return false, fmt.Errorf("delete document %s: %w", documentID, ErrConflict)
}
