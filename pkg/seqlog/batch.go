package seqlog

import (
	"context"
	"fmt"

	"github.com/rcm-platform/rcm/pkg/mongox"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
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
// each looked up, in parallel), and then writes every account's hint in
// a few commands (hintChunk accounts each): a fetch spread over many
// accounts costs a few commands, not two per account. When it returns
// nil every account's hint is at least its batch's head, so a caller that
// makes the items known only after that (publishes them) may read a head
// from the hint alone (see HeadHint). That rests on the heads being right, which is the case
// unless another writer appended or an event is a replay; then an insert
// fails on a unique index, everything before it is this call's (an
// ordered insert stops at its first failure), and the rest of each batch
// goes through Append, which works out what happened.
func (l *Log) AppendBatches(ctx context.Context, batches []Batch) ([][]Result, error) {
	heads := make([]Head, len(batches))
	err := lookups(ctx, len(batches), func(ctx context.Context, b int) error {
		h, ok := l.cached(batches[b].Account)
		if !ok {
			var err error
			if h, err = l.LoadHead(ctx, batches[b].Account); err != nil {
				return err
			}
		}
		heads[b] = h
		return nil
	})
	if err != nil {
		return nil, err
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
	if err := l.hints(ctx, batches, heads); err != nil {
		return nil, err
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

// hints records each batch's head as its account's, as hint does, in
// commands of at most hintChunk accounts.
func (l *Log) hints(ctx context.Context, batches []Batch, heads []Head) error {
	models := make([]mongo.WriteModel, 0, len(batches))
	for b, batch := range batches {
		if heads[b].Seq == 0 {
			continue
		}
		models = append(models, mongo.NewUpdateOneModel().
			SetFilter(bson.D{{Key: "_id", Value: batch.Account}}).
			SetUpdate(bson.D{{Key: "$max", Value: bson.D{{Key: "seq", Value: heads[b].Seq}}}}).
			SetUpsert(true))
	}
	for len(models) > 0 {
		chunk := models[:min(hintChunk, len(models))]
		models = models[len(chunk):]
		if _, err := l.heads.BulkWrite(ctx, chunk, options.BulkWrite().SetOrdered(false)); err != nil {
			return fmt.Errorf("hint the heads of %d accounts: %w", len(batches), mongox.Classify(err))
		}
	}
	return nil
}
