// Package store is the feed's activity history: each account's items in
// its sequence (pkg/seqlog), stored once per event, paged newest first,
// and read back to a stream from where its client left off. Every read
// and its position arithmetic live here; the HTTP handlers only pass the
// client's cursors through.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rcm-platform/rcm/pkg/seqlog"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Collections of the feed's database.
const (
	ItemsCollection = "items"
	HeadsCollection = "item_heads"
)

// Config is what a Store needs.
type Config struct {
	// DB holds the items and their head hints.
	DB *mongo.Database
	// Now is the clock of each record's storedAt (time.Now when nil).
	Now func() time.Time
	// HintEvery is how many items apart an account's head hint is
	// written (DefaultHintEvery when 0): a head is found by reading
	// forward from the hint, so a hint written less often costs the
	// appends fewer commands and a head lookup a few more.
	HintEvery int64
}

// DefaultHintEvery writes an account's hint once per 8 of its items. On the
// embedded store an update of a hint costs about as much as the insert of
// the items it follows; a head lookup that starts from a hint 8 behind
// reads at most 14 seqs past it, in 3 rounds of parallel lookups.
const DefaultHintEvery = 8

// Store reads and appends the accounts' activity items.
type Store struct {
	log *seqlog.Log
	now func() time.Time
}

// New returns the store in cfg.DB.
func New(cfg Config) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HintEvery <= 0 {
		cfg.HintEvery = DefaultHintEvery
	}
	return &Store{
		log: seqlog.New(seqlog.Config{Docs: cfg.DB.Collection(ItemsCollection), Heads: cfg.DB.Collection(HeadsCollection), HintEvery: cfg.HintEvery}),
		now: cfg.Now,
	}
}

// EnsureIndexes creates the unique indexes the sequence rests on.
func (s *Store) EnsureIndexes(ctx context.Context) error { return s.log.EnsureIndexes(ctx) }

// Forget drops cached heads, when this process stops owning a partition.
func (s *Store) Forget() { s.log.Forget() }

// Appended says where an item is stored and whether it was already.
type Appended = seqlog.Result

// Batch is one account's items to store, in order, not yet numbered.
type Batch struct {
	Account string
	Items   []activity.Item
}

// Append stores items, all of account and not yet numbered, in order,
// each event once, and says where each is.
func (s *Store) Append(ctx context.Context, account string, items []activity.Item) ([]Appended, error) {
	res, err := s.AppendBatches(ctx, []Batch{{Account: account, Items: items}})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// AppendBatches stores the batches of several accounts, at most one batch
// per account, each in order and each event once, in a few commands for
// all of them (seqlog.AppendBatches), and says where each item is.
func (s *Store) AppendBatches(ctx context.Context, batches []Batch) ([][]Appended, error) {
	now := s.now().UTC()
	seqBatches := make([]seqlog.Batch, len(batches))
	n := 0
	for b, batch := range batches {
		account := batch.Account
		seqItems := make([]seqlog.Item, len(batch.Items))
		for i, it := range batch.Items {
			seqItems[i] = seqlog.Item{EventID: it.ID, Build: func(seq int64, _ string) (any, string, error) {
				it.Seq = seq
				return activity.Record{Key: seqlog.Key(account, seq), AccountID: account, Item: it, StoredAt: now}, "", nil
			}}
		}
		seqBatches[b] = seqlog.Batch{Account: account, Items: seqItems}
		n += len(seqItems)
	}
	res, err := s.log.AppendBatches(ctx, seqBatches)
	if err != nil {
		return nil, fmt.Errorf("store %d items of %d accounts: %w", n, len(batches), err)
	}
	return res, nil
}

// Head returns the seq of account's last item; 0 when it has none. An
// item stored after it was read was published after that.
func (s *Store) Head(ctx context.Context, account string) (int64, error) {
	h, err := s.log.FindHead(ctx, account)
	return h.Seq, err
}

// read reads n items of account from seq from on by step, each as a slot.
func (s *Store) read(ctx context.Context, account string, from, step int64, n int) ([]seqlog.Slot[activity.Record], error) {
	return seqlog.Range[activity.Record](ctx, s.log, account, from, step, n)
}

// ErrInvalidCursor says that a cursor is not one this store handed out.
var ErrInvalidCursor = errors.New("not a cursor of the activity feed")

// Page is a page of an account's history, newest first.
type Page struct {
	Items []activity.Item
	// NextCursor is where the next, older page starts; "" when there is
	// none.
	NextCursor string
}

// Page returns up to limit of account's items, newest first, older than
// cursor (the NextCursor of the previous page; "" for the newest). A
// missing item is left out. A cursor that is not one fails with
// ErrInvalidCursor.
func (s *Store) Page(ctx context.Context, account string, limit int, cursor string) (Page, error) {
	before := int64(-1) // the page holds items before this seq; -1 for all
	if cursor != "" {
		c, err := activity.ParseCursor(cursor)
		if err != nil {
			return Page{}, ErrInvalidCursor
		}
		before = c
	}
	head, err := s.Head(ctx, account)
	if err != nil {
		return Page{}, err
	}
	top := head
	if before >= 0 {
		top = min(top, before-1)
	}
	n := int(min(int64(limit), max(top, 0)))
	slots, err := s.read(ctx, account, top, -1, n)
	if err != nil {
		return Page{}, err
	}
	p := Page{Items: []activity.Item{}}
	for _, sl := range slots {
		if sl.Found {
			p.Items = append(p.Items, sl.Doc.Item)
		}
	}
	if n > 0 && slots[n-1].Seq > 1 {
		p.NextCursor = activity.FormatCursor(slots[n-1].Seq)
	}
	return p, nil
}
