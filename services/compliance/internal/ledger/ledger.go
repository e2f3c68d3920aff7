// Package ledger is the compliance log: an insert-only, per-account,
// hash-chained sequence of entries, one per event (see pkg/auditlog for the
// chain and pkg/seqlog for the storage). No code path here updates or
// deletes an entry.
package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
)

// Ledger reads and appends the compliance log.
type Ledger struct {
	log *seqlog.Log
	now func() time.Time

	// verifying runs one verification per account and head at a time;
	// verified holds each account's last ok result (see Verify).
	verifying singleflight.Group
	mu        sync.Mutex
	verified  map[string]verification
}

// verification is an ok result and when its computation started.
type verification struct {
	at  time.Time
	res auditlog.Result
}

// New returns the ledger stored in db.
func New(db *mongo.Database, now func() time.Time) *Ledger {
	return &Ledger{
		log: seqlog.New(db.Collection(auditlog.EntriesCollection), db.Collection(auditlog.HeadsCollection)),
		now: now, verified: map[string]verification{},
	}
}

// EnsureIndexes creates the unique indexes (event id; account and seq).
func (l *Ledger) EnsureIndexes(ctx context.Context) error { return l.log.EnsureIndexes(ctx) }

// Forget drops cached heads, when this process stops owning a partition.
func (l *Ledger) Forget() { l.log.Forget() }

// Event is an event to record, with its JSON data exactly as received.
type Event struct {
	events.Event
	Data []byte
}

// Appended says where an event is recorded and whether it was already.
type Appended = seqlog.Result

// UnappendableError says that an event can never be an entry: its entry
// cannot be built (its data is not JSON that RFC 8785 can encode). Retrying
// cannot help; nothing of the batch from that event on was written.
type UnappendableError struct {
	EventID string
	Err     error
}

func (e *UnappendableError) Error() string {
	return fmt.Sprintf("event %s cannot be logged: %v", e.EventID, e.Err)
}

func (e *UnappendableError) Unwrap() error { return e.Err }

// Append records evs, all of account, in order, each at most once. An
// event whose entry cannot be built fails it with an *UnappendableError.
func (l *Ledger) Append(ctx context.Context, account string, evs []Event) ([]Appended, error) {
	recordedAt := events.FormatTime(l.now())
	items := make([]seqlog.Item, 0, len(evs))
	for _, e := range evs {
		items = append(items, seqlog.Item{EventID: e.EventID, Build: func(seq int64, prev string) (any, string, error) {
			if prev == "" {
				prev = auditlog.GenesisHash
			}
			entry := auditlog.Entry{
				EventID: e.EventID, AccountID: account, Seq: seq, EventType: e.EventType,
				DocumentID: e.DocumentID, CampaignID: e.CampaignID,
				Actor: auditlog.Actor{Type: e.Actor.Type, ID: e.Actor.ID, SessionID: e.Actor.SessionID},
				Data:  json.RawMessage(e.Data), OccurredAt: e.OccurredAt, RecordedAt: recordedAt,
			}
			if err := auditlog.Seal(&entry, prev); err != nil {
				return nil, "", &UnappendableError{EventID: e.EventID, Err: err}
			}
			doc, err := auditlog.ToDoc(entry, seqlog.Key(account, seq))
			if err != nil {
				return nil, "", &UnappendableError{EventID: e.EventID, Err: err}
			}
			return doc, entry.Hash, nil
		}})
	}
	return l.log.Append(ctx, account, auditlog.LinkField, items)
}

// Head returns the seq of account's last entry: the furthest of the stored
// hint and what the entries themselves show, so that a deleted entry at
// any position still leaves the head where the log reached.
func (l *Ledger) Head(ctx context.Context, account string) (int64, error) {
	return l.log.Reach(ctx, account, auditlog.LinkField)
}

// Get returns entry seq of account; found is false when it is missing.
func (l *Ledger) Get(ctx context.Context, account string, seq int64) (auditlog.Entry, bool, error) {
	var d auditlog.Doc
	found, err := l.log.Get(ctx, account, seq, &d)
	if err != nil || !found {
		return auditlog.Entry{}, found, err
	}
	e, err := d.Entry()
	return e, true, err
}

// Slot is one position read by Range: the entry, or Found false for a
// missing one.
type Slot struct {
	Seq   int64
	Found bool
	Entry auditlog.Entry
}

// Range reads seqs from, from+step, … (step is 1 or -1), n of them, with a
// few lookups in flight at once, in order.
func (l *Ledger) Range(ctx context.Context, account string, from int64, step int64, n int) ([]Slot, error) {
	slots := make([]Slot, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range slots {
		seq := from + int64(i)*step
		slots[i].Seq = seq
		g.Go(func() error {
			e, found, err := l.Get(gctx, account, seq)
			if err != nil {
				return err
			}
			slots[i].Found, slots[i].Entry = found, e
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("read log of %s: %w", account, err)
	}
	return slots, nil
}

// verifyReuse is how long an ok verification is reused while the log has
// not grown (spec/transparency.md): repeated calls cost a head lookup, and
// an entry edited or deleted in the database is reported at most this
// late.
const verifyReuse = time.Minute

// keepVerified bounds the accounts whose last result is kept before the
// expired ones are dropped.
const keepVerified = 10_000

// Verify returns the verification of account's chain (see recompute). An
// ok result is reused for up to verifyReuse while the head has not moved;
// a broken chain is recomputed every time, as what broke may change.
// Concurrent calls for one account and head share one computation, which
// runs to its end even when the caller that started it goes away, so that
// the others get its answer.
func (l *Ledger) Verify(ctx context.Context, account string) (auditlog.Result, error) {
	head, err := l.Head(ctx, account)
	if err != nil {
		return auditlog.Result{}, err
	}
	if res, ok := l.recent(account, head); ok {
		return res, nil
	}
	done := l.verifying.DoChan(account+"/"+strconv.FormatInt(head, 10), func() (any, error) {
		at := l.now()
		res, err := l.recompute(context.WithoutCancel(ctx), account, head)
		if err == nil && res.OK {
			l.keep(account, verification{at: at, res: res})
		}
		return res, err
	})
	select {
	case <-ctx.Done():
		return auditlog.Result{}, ctx.Err()
	case r := <-done:
		if r.Err != nil {
			return auditlog.Result{}, r.Err
		}
		return r.Val.(auditlog.Result), nil
	}
}

// recent returns account's last ok result if it was computed less than
// verifyReuse ago at head.
func (l *Ledger) recent(account string, head int64) (auditlog.Result, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.verified[account]
	if !ok || v.res.HeadSeq != head || l.now().Sub(v.at) >= verifyReuse {
		return auditlog.Result{}, false
	}
	return v.res, true
}

func (l *Ledger) keep(account string, v verification) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.verified) >= keepVerified {
		for a, old := range l.verified {
			if l.now().Sub(old.at) >= verifyReuse {
				delete(l.verified, a)
			}
		}
	}
	l.verified[account] = v
}

// recompute recomputes account's chain from its first entry to head. The
// result's Entries counts the entries found, which falls short of HeadSeq
// when some were deleted; HeadSeq and HeadHash say where the log reached,
// broken or not.
func (l *Ledger) recompute(ctx context.Context, account string, head int64) (auditlog.Result, error) {
	v := auditlog.NewVerifier(account)
	var stored int64
	var headHash string
	const window = 64
	for from := int64(1); from <= head; from += window {
		slots, err := l.Range(ctx, account, from, 1, int(min(window, head-from+1)))
		if err != nil {
			return auditlog.Result{}, err
		}
		for _, s := range slots {
			if !s.Found {
				// Skipping it lets the verifier report the missing seq.
				continue
			}
			stored++
			_ = v.Add(s.Entry)
			if s.Seq == head {
				headHash = s.Entry.Hash
			}
		}
	}
	out := v.Finish(head)
	out.Entries, out.HeadSeq, out.HeadHash = stored, head, headHash
	return out, nil
}
