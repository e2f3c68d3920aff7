package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/rcm-platform/rcm/services/feed/internal/activity"
)

// Position is where a stream starts: after the item whose cursor its
// client sent back (its Last-Event-ID), or at the head, live only.
type Position struct {
	after  int64
	resume bool
}

// ParsePosition reads a stream's Last-Event-ID; "" starts at the head. A
// value that is not a cursor fails with ErrInvalidCursor.
func ParsePosition(lastEventID string) (Position, error) {
	if lastEventID == "" {
		return Position{}, nil
	}
	c, err := activity.ParseCursor(lastEventID)
	if err != nil {
		return Position{}, ErrInvalidCursor
	}
	return Position{after: c, resume: true}, nil
}

// BeyondHeadError refuses a position past the account's head: no stream
// sent it, since an item is stored before it is published, and resuming
// from it would hold back every item up to it.
type BeyondHeadError struct {
	Head int64
}

func (e *BeyondHeadError) Error() string {
	return fmt.Sprintf("position beyond the head, %d", e.Head)
}

// Open returns account's stream from at. It reads the head, so a caller
// subscribes to the live items first: an item stored after the head was
// read is then surely seen live, one stored before is in the backlog, and
// one seen both ways is sent once. A position past the head fails with a
// *BeyondHeadError.
//
// The head is read from the items themselves, forward from the
// account's hint (see Head): nothing rests on when the hint was written.
func (s *Store) Open(ctx context.Context, account string, at Position) (*Stream, error) {
	head, err := s.Head(ctx, account)
	if err != nil {
		return nil, err
	}
	return s.open(account, at, head)
}

// OpenAt is Open with the head already known: head must be such that
// every item up to it is stored and every item after it reaches the
// caller's subscription live (the hub knows such a head for an account
// it follows). It reads nothing unless at is past head, which is then
// checked against the items before it is refused.
func (s *Store) OpenAt(ctx context.Context, account string, at Position, head int64) (*Stream, error) {
	if at.resume && at.after > head {
		return s.Open(ctx, account, at)
	}
	return s.open(account, at, head)
}

func (s *Store) open(account string, at Position, head int64) (*Stream, error) {
	st := &Stream{store: s, account: account, last: head, head: head}
	if at.resume {
		if at.after > head {
			return nil, &BeyondHeadError{Head: head}
		}
		st.last = at.after
	}
	return st, nil
}

// Head is the head the stream was opened at.
func (st *Stream) Head() int64 { return st.head }

// Delivery is an item for a stream, with its JSON; Live says it came from
// the live topic rather than from the store.
type Delivery struct {
	Item activity.Item
	JSON []byte
	Live bool
}

// Stream is one stream's place in its account's sequence: it hands each
// item after the last one it handed out to send, once and in order.
type Stream struct {
	store   *Store
	account string
	last    int64 // the seq of the last item sent
	head    int64 // the head when the stream opened
}

// historyPage is how many stored items one round of lookups reads.
const historyPage = 64

// Backlog sends the stored items from the stream's position up to the
// head as Open read it.
func (st *Stream) Backlog(ctx context.Context, send func(Delivery) error) error {
	return st.fill(ctx, st.head, send)
}

// Live sends the live item it with its JSON, after the stored items
// between the last one sent and it (published out of order, or before
// this instance followed the topic); nothing when it was sent already.
func (st *Stream) Live(ctx context.Context, it activity.Item, data []byte, send func(Delivery) error) error {
	if it.Seq <= st.last {
		return nil
	}
	if err := st.fill(ctx, it.Seq-1, send); err != nil {
		return err
	}
	if err := send(Delivery{Item: it, JSON: data, Live: true}); err != nil {
		return err
	}
	st.last = it.Seq
	return nil
}

// fill sends the stored items after the last one sent up to and including
// upTo, in order. An item missing from the store ends it with an error,
// after the ones before it.
func (st *Stream) fill(ctx context.Context, upTo int64, send func(Delivery) error) error {
	for st.last < upTo {
		slots, err := st.store.read(ctx, st.account, st.last+1, 1, int(min(upTo-st.last, historyPage)))
		if err != nil {
			return err
		}
		for _, sl := range slots {
			if !sl.Found {
				return fmt.Errorf("item %d of %s is not stored", sl.Seq, st.account)
			}
			data, err := json.Marshal(sl.Doc.Item)
			if err != nil {
				return fmt.Errorf("encode item %d of %s: %w", sl.Seq, st.account, err)
			}
			if err := send(Delivery{Item: sl.Doc.Item, JSON: data}); err != nil {
				return err
			}
			st.last = sl.Seq
		}
	}
	return nil
}
