package checkpoint

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/mod/sumdb/tlog"
)

// Collections of the checkpoint store, in the compliance database.
const (
	// CheckpointsCollection holds each account's signed checkpoints,
	// numbered 1, 2, 3… per account, insert-only.
	CheckpointsCollection = "checkpoints"
	// HeadsCollection holds a hint of each account's latest checkpoint
	// number (the checkpoints themselves say where the sequence ends),
	// written with how far its checkpoints were published (publishMark).
	HeadsCollection = "checkpoint_heads"
	// CosignaturesCollection holds the cosignatures witnesses gave,
	// insert-only, one document per checkpoint and witness, apart from
	// the signed note they cosign.
	CosignaturesCollection = "checkpoint_cosignatures"
)

// Store is the insert-only store of the checkpoints the log signed.
type Store struct {
	checkpoints *mongo.Collection
	heads       *mongo.Collection
	cosigs      *mongo.Collection
	// witnesses are the ids (Witness.ID) whose cosignatures are read.
	witnesses []string
	now       func() time.Time

	// known holds, per account, the number of the latest checkpoint this
	// process stored or read: where the next look for the latest starts.
	// The store says where the sequence ends; this only saves the hint.
	mu    sync.Mutex
	known map[string]int64

	// signed holds the latest checkpoint this process stored of each of
	// the accounts it signed most recently (see latestAll).
	signed *lru.Cache[string, stored]
}

// signedKept bounds the accounts whose latest checkpoint the signer keeps
// (Store.signed): a few hundred bytes each.
const signedKept = 1 << 14

// NewStore returns the store in db, reading the cosignatures of the
// witnesses whose ids are given.
func NewStore(db *mongo.Database, witnesses []string, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	signed, _ := lru.New[string, stored](signedKept) // fails only for a size below 1
	return &Store{
		checkpoints: db.Collection(CheckpointsCollection),
		heads:       db.Collection(HeadsCollection),
		cosigs:      db.Collection(CosignaturesCollection),
		witnesses:   witnesses, now: now, known: map[string]int64{},
		signed: signed,
	}
}

// EnsureIndexes creates the unique index that stores a size at most once
// per account.
func (s *Store) EnsureIndexes(ctx context.Context) error {
	return mongox.Classify(mongox.EnsureIndexes(ctx, s.checkpoints,
		mongox.Index{Keys: bson.D{{Key: "accountId", Value: 1}, {Key: "size", Value: 1}}, Options: options.Index().SetUnique(true)},
	))
}

type doc struct {
	ID        string `bson:"_id"`
	AccountID string `bson:"accountId"`
	Seq       int64  `bson:"seq"`
	Size      int64  `bson:"size"`
	Root      string `bson:"root"`
	Note      string `bson:"note"`
	SignedAt  string `bson:"signedAt"`
}

type cosigDoc struct {
	ID        string `bson:"_id"`
	AccountID string `bson:"accountId"`
	Size      int64  `bson:"size"`
	Witness   string `bson:"witness"`
	Line      string `bson:"line"`
	At        string `bson:"at"`
}

// stored is a checkpoint and its number in the account's sequence.
type stored struct {
	Checkpoint
	seq int64
	// fresh says that this process has just inserted it: it has no
	// cosignature, and nobody published it.
	fresh bool
	// proof, of a fresh one, is its tree's consistency proof from size
	// proofFrom (its predecessor's), as signing checked it.
	proof     tlog.TreeProof
	proofFrom int64
}

// ErrRaced says that another writer stored a checkpoint of the account
// meanwhile: what was checked against the latest must be checked again.
var ErrRaced = errors.New("another checkpoint of the account was stored meanwhile")

// Put stores cp as the checkpoint after last (nil: the account's first).
// It is insert-only: a size stored before, with the same root, is left as
// it is; with another root it is an error, as is a checkpoint stored
// after last by another writer (ErrRaced).
func (s *Store) Put(ctx context.Context, cp Checkpoint, last *stored) (stored, error) {
	sts, errs := s.putAll(ctx, []Checkpoint{cp}, []*stored{last})
	return sts[0], errs[0]
}

// putAll stores each of cps as Put does, after the last of the same
// index, in one unordered insert: a duplicate (a size or a number stored
// before) is then looked at alone, as Put does.
func (s *Store) putAll(ctx context.Context, cps []Checkpoint, lasts []*stored) ([]stored, []error) {
	sts := make([]stored, len(cps))
	errs := make([]error, len(cps))
	if len(cps) == 0 {
		return sts, errs
	}
	docs := make([]any, len(cps))
	signedAt := s.now().UTC().Format(time.RFC3339Nano)
	for i, cp := range cps {
		seq := int64(1)
		if lasts[i] != nil {
			seq = lasts[i].seq + 1
		}
		sts[i] = stored{Checkpoint: cp, seq: seq, fresh: true}
		docs[i] = doc{
			ID: seqlog.Key(cp.Account, seq), AccountID: cp.Account, Seq: seq, Size: cp.Size,
			Root: base64.StdEncoding.EncodeToString(cp.Root[:]), Note: string(cp.Note), SignedAt: signedAt,
		}
	}
	_, err := s.checkpoints.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	failed := map[int]error{}
	var bwe mongo.BulkWriteException
	switch {
	case err == nil:
	case errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0:
		for _, we := range bwe.WriteErrors {
			failed[we.Index] = we
		}
	default:
		for i := range cps {
			failed[i] = err
		}
	}
	for i, cp := range cps {
		err, ok := failed[i]
		switch {
		case !ok:
			s.remember(cp.Account, sts[i].seq)
			s.signed.Add(cp.Account, stored{Checkpoint: Checkpoint{Account: cp.Account, Size: cp.Size, Root: cp.Root, Note: cp.Note}, seq: sts[i].seq})
			continue
		case mongo.IsDuplicateKeyError(err):
			old, found, ferr := s.BySize(ctx, cp.Account, cp.Size)
			switch {
			case ferr != nil:
				errs[i] = ferr
			case found && old.Root == cp.Root:
				sts[i] = stored{Checkpoint: old, seq: sts[i].seq}
				continue
			default:
				// Another writer's checkpoint: the next look reads the
				// store again.
				s.signed.Remove(cp.Account)
				errs[i] = fmt.Errorf("store checkpoint %s/%d: %w", cp.Account, cp.Size, ErrRaced)
			}
		default:
			errs[i] = fmt.Errorf("store checkpoint %s/%d: %w", cp.Account, cp.Size, mongox.Classify(err))
		}
		sts[i] = stored{}
	}
	return sts, errs
}

// remember notes seq as the latest checkpoint of account known here.
func (s *Store) remember(account string, seq int64) {
	s.mu.Lock()
	s.known[account] = seq
	s.mu.Unlock()
}

// hints records the number of each of sts as a hint of its account's
// latest checkpoint number, in writes of up to hintChunk accounts. The
// hint only saves probes to a process that knows nothing of the account
// yet: a lost or late one costs a few lookups.
func (s *Store) hints(ctx context.Context, sts []stored) {
	for len(sts) > 0 {
		part := sts[:min(hintChunk, len(sts))]
		sts = sts[len(part):]
		models := make([]mongo.WriteModel, len(part))
		for i, st := range part {
			models[i] = mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: st.Account}}).
				SetUpdate(bson.D{{Key: "$max", Value: bson.D{{Key: "seq", Value: st.seq}}}}).SetUpsert(true)
		}
		_, _ = s.heads.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	}
}

// hintChunk bounds the accounts of one write of hints or marks: the
// embedded store holds a connection for each statement of an update until
// the command ends (see pkg/seqlog).
const hintChunk = 16

// Latest returns account's latest checkpoint with its cosignatures;
// found is false when it has none. It costs one lookup when this process
// stored or read one of the account's checkpoints (the last one stored
// from that one on), one more for the hint otherwise, and a gallop from 1
// when neither is stored any more.
func (s *Store) Latest(ctx context.Context, account string) (Checkpoint, bool, error) {
	st, found, err := s.latest(ctx, account)
	if err != nil || !found {
		return Checkpoint{}, found, err
	}
	cp, err := s.withCosignatures(ctx, st.Checkpoint)
	return cp, true, err
}

func (s *Store) latest(ctx context.Context, account string) (*stored, bool, error) {
	s.mu.Lock()
	from := s.known[account]
	s.mu.Unlock()
	if from == 0 {
		var hint struct {
			Seq int64 `bson:"seq"`
		}
		err := s.heads.FindOne(ctx, bson.D{{Key: "_id", Value: account}}).Decode(&hint)
		if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
			return nil, false, fmt.Errorf("checkpoint hint of %s: %w", account, mongox.Classify(err))
		}
		from = hint.Seq
	}
	var last *stored
	if from > 0 {
		var err error
		if last, err = s.lastFrom(ctx, account, from); err != nil {
			return nil, false, err
		}
	}
	if last == nil {
		// No hint, or one past the end: gallop, then bisect.
		lo, hi := int64(0), int64(1)
		for {
			d, err := s.get(ctx, account, hi)
			if err != nil {
				return nil, false, err
			}
			if d == nil {
				break
			}
			last, lo, hi = d, hi, hi*2
		}
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			d, err := s.get(ctx, account, mid)
			if err != nil {
				return nil, false, err
			}
			if d != nil {
				last, lo = d, mid
			} else {
				hi = mid
			}
		}
		if last == nil {
			s.mu.Lock()
			delete(s.known, account)
			s.mu.Unlock()
			return nil, false, nil
		}
	}
	s.remember(account, last.seq)
	return last, true, nil
}

// latestAll returns the latest checkpoint of each of accounts for the
// signer to go on from (nil when it has none). The one this process
// stored last is taken as it kept it (Store.signed), without a read:
// the signer checks the tree against what it signed itself, which no
// write to the store can change, and another writer's later checkpoint
// takes the number its next one would, so that putAll finds the race
// (ErrRaced) and the next look reads the store. The others are read as
// latest does, from a find of the hints this process lacks and one of
// the checkpoints at and after each known number (or of each first
// checkpoint), by _id: two commands for any number of accounts, one once
// this process knows them. An account that the find leaves unsettled (a
// hint past the end, a checkpoint stored by another writer after the one
// known) is looked at alone by latest.
func (s *Store) latestAll(ctx context.Context, accounts []string) ([]*stored, error) {
	out := make([]*stored, len(accounts))
	var rest []string
	var at []int
	for i, a := range accounts {
		if st, ok := s.signed.Get(a); ok {
			out[i] = &st
			continue
		}
		rest, at = append(rest, a), append(at, i)
	}
	if len(rest) == 0 {
		return out, nil
	}
	read, err := s.readLatest(ctx, rest)
	if err != nil {
		return nil, err
	}
	for j, st := range read {
		out[at[j]] = st
	}
	return out, nil
}

// readLatest reads the latest checkpoint of each of accounts from the
// store (see latestAll).
func (s *Store) readLatest(ctx context.Context, accounts []string) ([]*stored, error) {
	from := make([]int64, len(accounts))
	var unknown []string
	s.mu.Lock()
	for i, a := range accounts {
		if from[i] = s.known[a]; from[i] == 0 {
			unknown = append(unknown, a)
		}
	}
	s.mu.Unlock()
	if len(unknown) > 0 {
		hints, err := findByID[struct {
			ID  string `bson:"_id"`
			Seq int64  `bson:"seq"`
		}](ctx, s.heads, unknown)
		if err != nil {
			return nil, fmt.Errorf("checkpoint hints: %w", err)
		}
		for i, a := range accounts {
			if from[i] == 0 {
				from[i] = hints[a].Seq
			}
		}
	}
	var keys []string
	for i, a := range accounts {
		keys = append(keys, seqlog.Key(a, max(from[i], 1)))
		if from[i] > 0 {
			keys = append(keys, seqlog.Key(a, from[i]+1))
		}
	}
	docs, err := findByID[doc](ctx, s.checkpoints, keys)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	out := make([]*stored, len(accounts))
	for i, a := range accounts {
		at, atOK := docs[seqlog.Key(a, max(from[i], 1))]
		_, nextOK := docs[seqlog.Key(a, from[i]+1)]
		switch {
		case from[i] == 0 && !atOK:
			// No checkpoint, and no hint of one.
			s.mu.Lock()
			delete(s.known, a)
			s.mu.Unlock()
			continue
		case from[i] > 0 && atOK && !nextOK:
			st, err := decode(at)
			if err != nil {
				return nil, err
			}
			s.remember(a, st.seq)
			out[i] = st
			continue
		}
		st, found, err := s.latest(ctx, a)
		if err != nil {
			return nil, err
		}
		if found {
			out[i] = st
		}
	}
	return out, nil
}

// findByID reads the documents of coll whose _id is one of ids, by _id,
// in finds of up to findBatch ids, and returns them by _id.
func findByID[T any](ctx context.Context, coll *mongo.Collection, ids []string) (map[string]T, error) {
	out := make(map[string]T, len(ids))
	for len(ids) > 0 {
		part := ids[:min(findBatch, len(ids))]
		ids = ids[len(part):]
		cur, err := coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: part}}}},
			options.Find().SetBatchSize(int32(len(part))))
		if err != nil {
			return nil, mongox.Classify(err)
		}
		for cur.Next(ctx) {
			var d T
			if err := cur.Decode(&d); err != nil {
				_ = cur.Close(ctx)
				return nil, err
			}
			id, _ := cur.Current.Lookup("_id").StringValueOK()
			out[id] = d
		}
		err = cur.Err()
		_ = cur.Close(ctx)
		if err != nil {
			return nil, mongox.Classify(err)
		}
	}
	return out, nil
}

// findBatch is how many _ids one find of findByID asks for: MongoDB
// answers {_id: {$in: ids}} from its _id index, the embedded store's
// front with a lookup by _id each (up to 1,000).
const findBatch = 256

// lastFrom reads account's checkpoints from and from+1 in one query (by
// _id alone: the store's only indexed lookup), then probes forward from
// the later while there is a next; nil when neither is stored (deleted:
// the caller looks from 1).
func (s *Store) lastFrom(ctx context.Context, account string, from int64) (*stored, error) {
	cur, err := s.checkpoints.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in",
		Value: bson.A{seqlog.Key(account, from), seqlog.Key(account, from+1)}}}}})
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", mongox.Classify(err))
	}
	var docs []doc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", mongox.Classify(err))
	}
	var last *stored
	for _, d := range docs {
		st, err := decode(d)
		if err != nil {
			return nil, err
		}
		if last == nil || st.seq > last.seq {
			last = st
		}
	}
	for last != nil && last.seq > from {
		next, err := s.get(ctx, account, last.seq+1)
		if err != nil || next == nil {
			return last, err
		}
		last = next
	}
	return last, nil
}

// get reads checkpoint number seq of account; nil when there is none.
func (s *Store) get(ctx context.Context, account string, seq int64) (*stored, error) {
	return s.findOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key(account, seq)}})
}

func (s *Store) findOne(ctx context.Context, filter bson.D) (*stored, error) {
	var d doc
	err := s.checkpoints.FindOne(ctx, filter).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", mongox.Classify(err))
	}
	return decode(d)
}

// decode reads a stored checkpoint document.
func decode(d doc) (*stored, error) {
	raw, err := base64.StdEncoding.DecodeString(d.Root)
	if err != nil || len(raw) != tlog.HashSize {
		return nil, fmt.Errorf("checkpoint %s: stored root %q is not a hash", d.ID, d.Root)
	}
	st := &stored{Checkpoint: Checkpoint{Account: d.AccountID, Size: d.Size, Note: []byte(d.Note)}, seq: d.Seq}
	copy(st.Root[:], raw)
	return st, nil
}

// BySize returns account's checkpoint of size with its cosignatures;
// found is false when the log signed none of that size.
func (s *Store) BySize(ctx context.Context, account string, size int64) (Checkpoint, bool, error) {
	st, err := s.bySize(ctx, account, size)
	if err != nil || st == nil {
		return Checkpoint{}, false, err
	}
	cp, err := s.withCosignatures(ctx, st.Checkpoint)
	return cp, true, err
}

// searchWidth is how many checkpoints one step of bySize reads at once.
const searchWidth = 16

// bySize finds account's checkpoint of size by its number, reading only
// by _id (a find on {accountId, size} would read every checkpoint of
// every account on a store that serves no other index): the sizes grow
// with the numbers (Put stores a checkpoint only after the latest, and
// only larger), so the search narrows from the latest down, searchWidth
// checkpoints read in one query per step: log16 of the account's
// checkpoints steps. nil when the log signed none of that size.
func (s *Store) bySize(ctx context.Context, account string, size int64) (*stored, error) {
	last, found, err := s.latest(ctx, account)
	if err != nil || !found || size > last.Size {
		return nil, err
	}
	if size == last.Size {
		return last, nil
	}
	// Invariant: the checkpoint sought, if any, is numbered in (lo, hi):
	// checkpoint hi is larger, lo (0: none) smaller.
	lo, hi := int64(0), last.seq
	for hi-lo > 1 {
		seqs := make([]int64, 0, searchWidth)
		for i := int64(1); i <= searchWidth; i++ {
			q := lo + (hi-lo)*i/(searchWidth+1)
			if q > lo && q < hi && (len(seqs) == 0 || q > seqs[len(seqs)-1]) {
				seqs = append(seqs, q)
			}
		}
		got, err := s.getAll(ctx, account, seqs)
		if err != nil {
			return nil, err
		}
		nlo, nhi := lo, hi
		for _, q := range seqs {
			st := got[q]
			if st == nil {
				// Never deleted: the sequence is insert-only.
				return nil, fmt.Errorf("checkpoint %d of %s below the latest %d is missing", q, account, last.seq)
			}
			switch {
			case st.Size == size:
				return st, nil
			case st.Size < size:
				nlo = q
			case q < nhi:
				nhi = q
			}
		}
		lo, hi = nlo, nhi
	}
	return nil, nil
}

// getAll reads account's checkpoints numbered seqs in one query by _id.
func (s *Store) getAll(ctx context.Context, account string, seqs []int64) (map[int64]*stored, error) {
	keys := make(bson.A, len(seqs))
	for i, q := range seqs {
		keys[i] = seqlog.Key(account, q)
	}
	cur, err := s.checkpoints.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: keys}}}})
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", mongox.Classify(err))
	}
	var docs []doc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", mongox.Classify(err))
	}
	out := make(map[int64]*stored, len(docs))
	for _, d := range docs {
		st, err := decode(d)
		if err != nil {
			return nil, err
		}
		out[st.seq] = st
	}
	return out, nil
}

func cosigID(account string, size int64, witness string) string {
	return seqlog.Key(account, size) + "/" + witness
}

// AddCosignature stores witness's cosignature line of cp; insert-only, a
// second one of the same witness is left out.
func (s *Store) AddCosignature(ctx context.Context, cp Checkpoint, witness, line string) error {
	return s.addCosignatures(ctx, []cosignature{{cp: cp, witness: witness, line: line}})[0]
}

// cosignature is a witness's cosignature line of a checkpoint.
type cosignature struct {
	cp            Checkpoint
	witness, line string
}

// addCosignatures stores each of cs as AddCosignature does, in one
// unordered insert, and returns each one's error.
func (s *Store) addCosignatures(ctx context.Context, cs []cosignature) []error {
	errs := make([]error, len(cs))
	if len(cs) == 0 {
		return errs
	}
	at := s.now().UTC().Format(time.RFC3339Nano)
	docs := make([]any, len(cs))
	for i, c := range cs {
		docs[i] = cosigDoc{
			ID: cosigID(c.cp.Account, c.cp.Size, c.witness), AccountID: c.cp.Account, Size: c.cp.Size,
			Witness: c.witness, Line: c.line, At: at,
		}
	}
	_, err := s.cosigs.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	switch {
	case err == nil:
		return errs
	case errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0:
		for _, we := range bwe.WriteErrors {
			if !mongo.IsDuplicateKeyError(we) {
				errs[we.Index] = we
			}
		}
	default:
		for i := range errs {
			errs[i] = err
		}
	}
	for i, c := range cs {
		if errs[i] != nil {
			errs[i] = fmt.Errorf("store cosignature of %s/%d by %s: %w", c.cp.Account, c.cp.Size, c.witness, mongox.Classify(errs[i]))
		}
	}
	return errs
}

// withCosignatures adds to cp the stored cosignatures of the configured
// witnesses, in their order.
func (s *Store) withCosignatures(ctx context.Context, cp Checkpoint) (Checkpoint, error) {
	lines, err := s.cosignatures(ctx, cp)
	if err != nil {
		return Checkpoint{}, err
	}
	cp.Cosignatures = nil
	for _, w := range s.witnesses {
		if line, ok := lines[w]; ok {
			cp.Cosignatures = append(cp.Cosignatures, line)
		}
	}
	return cp, nil
}

// cosignatures returns the stored cosignature lines of cp by the
// configured witnesses, by witness id: one lookup by _id each.
func (s *Store) cosignatures(ctx context.Context, cp Checkpoint) (map[string]string, error) {
	out := make(map[string]string, len(s.witnesses))
	for _, w := range s.witnesses {
		var d cosigDoc
		err := s.cosigs.FindOne(ctx, bson.D{{Key: "_id", Value: cosigID(cp.Account, cp.Size, w)}}).Decode(&d)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read cosignature: %w", mongox.Classify(err))
		}
		out[w] = d.Line
	}
	return out, nil
}

// publishMark orders what was published of an account: checkpoint number
// seq with n cosignatures is further than every earlier checkpoint, and
// than the same one with fewer cosignatures.
func publishMark(seq int64, n int) int64 {
	return seq<<8 | int64(min(n, maxWitnesses))
}

// published returns account's publishMark of the furthest publication
// known to have succeeded; 0 when none is.
func (s *Store) published(ctx context.Context, account string) (int64, error) {
	var h struct {
		Published int64 `bson:"published"`
	}
	err := s.heads.FindOne(ctx, bson.D{{Key: "_id", Value: account}}).Decode(&h)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return 0, fmt.Errorf("publication hint of %s: %w", account, mongox.Classify(err))
	}
	return h.Published, nil
}

// mark is how far an account's checkpoints were published: up to mark
// (publishMark) of checkpoint number seq.
type mark struct {
	account   string
	seq, mark int64
}

// markPublished records each of ms, and its seq as the hint of its
// account's latest, in writes of up to hintChunk accounts; it never moves
// either back. It returns each one's error.
func (s *Store) markPublished(ctx context.Context, ms []mark) []error {
	errs := make([]error, len(ms))
	for lo := 0; lo < len(ms); lo += hintChunk {
		part := ms[lo:min(lo+hintChunk, len(ms))]
		models := make([]mongo.WriteModel, len(part))
		for i, m := range part {
			models[i] = mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: m.account}}).
				SetUpdate(bson.D{{Key: "$max", Value: bson.D{{Key: "published", Value: m.mark}, {Key: "seq", Value: m.seq}}}}).
				SetUpsert(true)
		}
		_, err := s.heads.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
		var bwe mongo.BulkWriteException
		switch {
		case err == nil:
			continue
		case errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0:
			for _, we := range bwe.WriteErrors {
				errs[lo+we.Index] = fmt.Errorf("publication hint of %s: %w", part[we.Index].account, mongox.Classify(we))
			}
		default:
			for i, m := range part {
				errs[lo+i] = fmt.Errorf("publication hint of %s: %w", m.account, mongox.Classify(err))
			}
		}
	}
	return errs
}
