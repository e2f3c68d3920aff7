package seqlog

import (
	"context"
	"fmt"
	"sync"

	"github.com/rcm-platform/rcm/pkg/mongox"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"
)

// Batch is the items of one account to append, in order.
type Batch struct {
	Account string
	Items   []Item
}

// AppendBatches appends the items of several accounts, each batch's in
// order and each event once, and returns one result per item of each
// batch. The rules are Append's, and so is the caller's duty: no two
// batches of one account, and no concurrent append to any of the accounts
// in this process.
//
// It sends every document of every batch in the same ordered inserts of
// at most insertChunk documents, after the heads (the cached ones, or
// found together with FindHeads; with HintEvery 1, an account without a
// hint is taken as empty, so that a fetch of accounts new to the log
// costs one find), and then, unless the caller writes them
// (CallerHints), writes the hint of every account whose head reached a
// multiple of the log's HintEvery, in a few commands (hintChunk accounts
// each): a fetch spread over many accounts costs a few commands, not two
// per account. A hint is only a
// place to start reading from: it may lag the head by up to HintEvery
// documents (more when a write of it failed), and FindHead reads forward
// from it. That rests on the heads being right, which is the case
// unless another writer appended or an event is a replay; then an insert
// fails on a unique index, everything before it is this call's (an
// ordered insert stops at its first failure), and the rest of each batch
// goes through Append, which works out what happened.
func (l *Log) AppendBatches(ctx context.Context, batches []Batch) ([][]Result, error) {
	heads := make([]Head, len(batches))
	var unknown []string
	var at []int
	for b, batch := range batches {
		h, ok := l.cached(batch.Account)
		if !ok {
			unknown, at = append(unknown, batch.Account), append(at, b)
		}
		heads[b] = h
	}
	// Every head hinted: an account without a hint has no documents,
	// unless a crash came between its first documents and their hint;
	// then its insert fails on the unique index, and Append works out
	// the rest, as for a head another writer moved.
	found, err := l.findHeads(ctx, unknown, l.hintEvery == 1)
	if err != nil {
		return nil, err
	}
	for j, h := range found {
		heads[at[j]] = h
	}
	from := make([]int64, len(batches)) // each account's head before this call
	for b := range heads {
		from[b] = heads[b].Seq
	}
	type place struct {
		batch, item int
		head        Head // the account's head once this document is in
	}
	var (
		docs   []any
		places []place
	)
	for b, batch := range batches {
		next := heads[b]
		for i, it := range batch.Items {
			doc, link, err := it.Build(next.Seq+1, next.Link)
			if err != nil {
				return nil, err
			}
			next = Head{Seq: next.Seq + 1, Link: link}
			docs = append(docs, doc)
			places = append(places, place{batch: b, item: i, head: next})
		}
	}
	written, insertErr := 0, error(nil)
	for written < len(docs) {
		chunk := docs[written:min(written+insertChunk, len(docs))]
		if _, err := l.docs.InsertMany(ctx, chunk, options.InsertMany().SetOrdered(true)); err != nil {
			written += insertedBefore(err)
			insertErr = err
			break
		}
		written += len(chunk)
	}
	if insertErr != nil && !mongox.IsDuplicateKey(insertErr) {
		// Nothing sure is known of what was written: look the heads up
		// afresh next time.
		l.mu.Lock()
		for _, b := range batches {
			delete(l.cache, b.Account)
		}
		l.mu.Unlock()
		return nil, fmt.Errorf("append %d documents of %d accounts: %w", len(docs), len(batches), mongox.Classify(insertErr))
	}

	results := make([][]Result, len(batches))
	done := make([]int, len(batches)) // items of each batch written
	for b, batch := range batches {
		results[b] = make([]Result, len(batch.Items))
	}
	for _, p := range places[:written] {
		results[p.batch][p.item] = Result{EventID: batches[p.batch].Items[p.item].EventID, Seq: p.head.Seq}
		heads[p.batch] = p.head
		done[p.batch] = p.item + 1
	}
	for b, batch := range batches {
		l.remember(batch.Account, heads[b])
	}
	if insertErr != nil {
		for b := places[written].batch; b < len(batches); b++ {
			rest, err := l.Append(ctx, batches[b].Account, batches[b].Items[done[b]:])
			if err != nil {
				return nil, err
			}
			copy(results[b][done[b]:], rest)
			if len(rest) > 0 {
				h, _ := l.cached(batches[b].Account)
				heads[b] = h
			}
		}
	}
	if !l.callerHints {
		if err := l.hints(ctx, batches, from, heads); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// hintChunk bounds the accounts of one command writing hints. FerretDB
// (the embedded store of the local stack and the tests) holds a
// connection of its per-database pool for each statement of an update
// until the whole command ends: two writers' updates of a hundred
// statements each exhaust its pool of 100 and wait for each other
// forever.
const hintChunk = 16

// hints records each batch's head as its account's (HintHeads): every
// head when hintEvery is 1, otherwise those that reached a multiple of
// it since from.
func (l *Log) hints(ctx context.Context, batches []Batch, from []int64, heads []Head) error {
	hs := make([]HeadHint, 0, len(batches))
	for b, batch := range batches {
		if heads[b].Seq == 0 || (l.hintEvery > 1 && heads[b].Seq/l.hintEvery == from[b]/l.hintEvery) {
			continue
		}
		hs = append(hs, HeadHint{Account: batch.Account, Seq: heads[b].Seq})
	}
	return l.HintHeads(ctx, hs)
}

// HeadHint is a hint of an account's head to record, and fields of the
// caller's to raise in the same statement.
type HeadHint struct {
	Account string
	Seq     int64
	// Also are more fields of the hint's document, each raised to its
	// value unless it holds a larger one ($max), as seq is.
	Also bson.D
}

// HintHeads records each of hs as its account's hint unless a later one
// is recorded, in commands of at most hintChunk accounts. A hint is only
// a place to start reading from (see AppendBatches).
func (l *Log) HintHeads(ctx context.Context, hs []HeadHint) error {
	models := make([]mongo.WriteModel, 0, len(hs))
	for _, h := range hs {
		fields := append(bson.D{{Key: "seq", Value: h.Seq}}, h.Also...)
		models = append(models, mongo.NewUpdateOneModel().
			SetFilter(bson.D{{Key: "_id", Value: h.Account}}).
			SetUpdate(bson.D{{Key: "$max", Value: fields}}).
			SetUpsert(true))
	}
	for len(models) > 0 {
		chunk := models[:min(hintChunk, len(models))]
		models = models[len(chunk):]
		if _, err := l.heads.BulkWrite(ctx, chunk, options.BulkWrite().SetOrdered(false)); err != nil {
			return fmt.Errorf("hint the heads of %d accounts: %w", len(hs), mongox.Classify(err))
		}
	}
	return nil
}

// findWidth is how many documents FindHead's first round reads from the
// hint on; each further round reads twice as many, up to readChunk.
const findWidth = 2

// FindHead finds account's head from the store: its hint, then the hinted
// document and the ones after it, with the lookups of a round in
// parallel, in rounds that double in length until one ends on a free
// seq; the head is the last document found. A hint that lags by n
// documents costs about n+3 lookups in log2(n) rounds. A document stored
// after its seq was read as free was published after this call read it,
// so a reader that subscribed to the live documents first sees it live.
// When the hinted document is missing (the hint is past the end), it
// finds the head as LoadHead does.
func (l *Log) FindHead(ctx context.Context, account string) (Head, error) {
	hint, err := l.HeadHint(ctx, account)
	if err != nil {
		return Head{}, err
	}
	t := &tail{log: l, account: account, head: Head{Seq: hint.Seq}}
	from := max(hint.Seq, 1) // the hinted document, for its link
	for width := int64(findWidth); ; width = min(2*width, readChunk) {
		docs, err := t.read(ctx, from, width, 1)
		if err != nil {
			return Head{}, err
		}
		if hint.Seq > 0 && from == hint.Seq && docs[0] == nil {
			return l.loadHead(ctx, account, hint)
		}
		for i, d := range docs {
			if d != nil {
				t.head = Head{Seq: from + int64(i), Link: d.Link}
			}
		}
		if docs[len(docs)-1] == nil {
			return t.head, nil
		}
		from += width
	}
}

// FindHeads finds the heads of accounts as FindHead does for each, with
// the lookups of every account's round in the same finds by _id: the
// hints in one find, then the hinted documents and the ones after them
// in rounds of finds (of up to rangeBatch keys each), so that the heads
// of a fetch's accounts new to this process cost two finds, not a few
// lookups each. An account whose hinted document is missing (the hint is
// past the end) is found as LoadHead does, alone.
func (l *Log) FindHeads(ctx context.Context, accounts []string) ([]Head, error) {
	return l.findHeads(ctx, accounts, false)
}

// findHeads is FindHeads; emptyWithoutHint takes an account without a hint
// as empty, its documents not looked up.
func (l *Log) findHeads(ctx context.Context, accounts []string, emptyWithoutHint bool) ([]Head, error) {
	out := make([]Head, len(accounts))
	if len(accounts) == 0 {
		return out, nil
	}
	hints, err := findByID[Head](ctx, l.heads, accounts)
	if err != nil {
		return nil, fmt.Errorf("head hints of %d accounts: %w", len(accounts), err)
	}
	type search struct {
		i           int
		hint        Head
		from, width int64
	}
	var pending []*search
	for i, a := range accounts {
		h, hinted := hints[a]
		out[i] = Head{Seq: h.Seq}
		if !hinted && emptyWithoutHint {
			continue
		}
		pending = append(pending, &search{i: i, hint: h, from: max(h.Seq, 1), width: findWidth})
	}
	for len(pending) > 0 {
		var keys []string
		for _, s := range pending {
			for k := range s.width {
				keys = append(keys, Key(accounts[s.i], s.from+k))
			}
		}
		docs, err := findByID[bson.Raw](ctx, l.docs, keys)
		if err != nil {
			return nil, fmt.Errorf("heads of %d accounts: %w", len(pending), err)
		}
		next := pending[:0]
		for _, s := range pending {
			account := accounts[s.i]
			if s.hint.Seq > 0 && s.from == s.hint.Seq {
				if _, ok := docs[Key(account, s.from)]; !ok {
					if out[s.i], err = l.loadHead(ctx, account, s.hint); err != nil {
						return nil, err
					}
					continue
				}
			}
			last := false
			for k := range s.width {
				raw, ok := docs[Key(account, s.from+k)]
				last = ok
				if ok {
					out[s.i] = Head{Seq: s.from + k, Link: l.link(raw)}
				}
			}
			if last {
				s.from += s.width
				s.width = min(2*s.width, readChunk)
				next = append(next, s)
			}
		}
		pending = next
	}
	return out, nil
}

// link returns the link stored in raw, a document of the log.
func (l *Log) link(raw bson.Raw) string {
	if l.linkField == "" {
		return ""
	}
	v, err := raw.LookupErr(l.linkField)
	if err != nil {
		return ""
	}
	s, _ := v.StringValueOK()
	return s
}

// findByID reads the documents of coll whose _id is one of ids, in finds
// of up to rangeBatch ids, rangeInFlight at once, and returns them by
// _id. The finds are of the _id list alone, with no projection: the only
// finds of several documents the embedded store answers from its _id
// index (see Range).
func findByID[T any](ctx context.Context, coll *mongo.Collection, ids []string) (map[string]T, error) {
	out := make(map[string]T, len(ids))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(rangeInFlight)
	for lo := 0; lo < len(ids); lo += rangeBatch {
		part := ids[lo:min(lo+rangeBatch, len(ids))]
		g.Go(func() error {
			cur, err := coll.Find(gctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: part}}}},
				options.Find().SetBatchSize(int32(len(part))))
			if err != nil {
				return mongox.Classify(err)
			}
			defer cur.Close(gctx)
			for cur.Next(gctx) {
				var d T
				if err := cur.Decode(&d); err != nil {
					return err
				}
				id, _ := cur.Current.Lookup("_id").StringValueOK()
				mu.Lock()
				out[id] = d
				mu.Unlock()
			}
			return mongox.Classify(cur.Err())
		})
	}
	return out, g.Wait()
}
