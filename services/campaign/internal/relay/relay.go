// Package relay publishes the outbox: events written with their campaign
// are produced to Kafka (idempotent producer, acks from all in-sync
// replicas) and removed from the outbox once the broker acknowledged them.
// The request path hands each event to the relay at once, in the order the
// commands were accepted; a periodic sweep of the store publishes whatever
// a crash, an outage or an overflow left behind. What a sweep finds goes
// to a backlog that the relay publishes before its queue, so that the
// sweep at start-up never waits for the broker, however many events a
// previous process left, and those events go out first and in order.
// An event left to a sweep (a full queue, a failed publish) goes out
// after the events handed over meanwhile: an account's events keep their
// order on its partition only while each goes straight through the queue.
// Delivery is at least once: consumers dedupe by event id.
//
// A published event leaves the outbox with the next command's write of
// its record (see store.Published), which changes the record anyway; what
// no command wrote within RemoveAfter the relay removes with writes of
// its own, batched across records. A busy record then costs one write
// per command. Until it leaves the outbox the event stays claimed by the
// relay, so no sweep of this process publishes it again; a sweep of
// another replica waits SweepMinAge, longer than RemoveAfter; after a
// crash it is published again, which consumers absorb.
//
// An event that changed a document's consent (an opt-out, a consent
// change) is followed on the compacted consent topic by the document's
// consent state as read after the event was acknowledged, and leaves the
// outbox only once that record is acknowledged too: the consent topic
// never runs ahead of the events, and a failure of either publishes both
// again. A reader keeps the highest version per key, so a state
// republished late changes nothing.
package relay

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/events/kafkarec"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/sync/errgroup"
)

// Outbox is the store side of the relay: the outboxes of the documents'
// records, and their consent.
type Outbox interface {
	Pending(ctx context.Context) ([]store.Pending, error)
	// RemoveFromOutboxes removes published events, by document, in one
	// command; it may be sent again after a failure.
	RemoveFromOutboxes(ctx context.Context, batch map[string][]events.Message) error
	Consent(ctx context.Context, documentID string) (events.Consent, error)
}

// Config tunes the relay.
type Config struct {
	Topic string
	// ConsentTopic is the compacted topic of the documents' consent.
	ConsentTopic string
	// QueueSize bounds the fresh events waiting in memory; past it,
	// events wait in the store for the sweep. (What a sweep found waits
	// in the backlog, which holds what the sweep read anyway.)
	QueueSize int
	// SweepInterval is how often the store is scanned for events nothing
	// is publishing, as a safety net: the scan reads every campaign with
	// a pending event (the embedded store reads them all).
	SweepInterval time.Duration
	// SweepCheck is how often the relay looks whether it dropped
	// anything (a full queue, a failed publish or removal) and then
	// sweeps at once.
	SweepCheck time.Duration
	// SweepMinAge keeps the sweep from republishing an event the fast path
	// is still publishing.
	SweepMinAge time.Duration
	// RemoveAfter is how long a published event waits in its record's
	// outbox for the next command's write to take it out, before the
	// relay removes it with a write of its own; kept under SweepMinAge,
	// so that another replica's sweep does not publish it again.
	RemoveAfter time.Duration
}

func (c *Config) defaults() {
	if c.Topic == "" {
		c.Topic = events.Topic
	}
	if c.ConsentTopic == "" {
		c.ConsentTopic = events.ConsentTopic
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 1 << 16
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 5 * time.Minute
	}
	if c.SweepCheck <= 0 {
		c.SweepCheck = min(10*time.Second, c.SweepInterval)
	}
	if c.SweepMinAge <= 0 {
		c.SweepMinAge = 30 * time.Second
	}
	if c.RemoveAfter <= 0 {
		c.RemoveAfter = 10 * time.Second
	}
	c.RemoveAfter = min(c.RemoveAfter, c.SweepMinAge/2)
}

type item struct {
	documentID string // whose record's outbox holds msg
	msg        events.Message
	enqueued   time.Time
}

// Relay publishes outbox events.
type Relay struct {
	cfg     Config
	client  *kgo.Client
	outbox  Outbox
	logger  *slog.Logger
	now     func() time.Time
	metrics *metrics

	queue chan item

	backlogMu sync.Mutex
	backlog   []item        // what sweeps found, oldest first; published before queue
	kick      chan struct{} // wakes Run when the backlog grows

	ackMu     sync.RWMutex // guards sending on acked against its close
	acked     chan item
	ackClosed bool

	// dirty is set when an event was left to the sweep.
	dirty atomic.Bool

	mu       sync.Mutex
	inflight map[string]struct{}
	oldest   time.Time // oldest pending event seen by the last sweep
	pending  int
	// reading counts the sweeps reading the outboxes; removed holds the
	// events removed from them meanwhile, which those reads may have
	// seen and must not publish again.
	reading int
	removed map[string]struct{}

	parkMu sync.Mutex
	// parked holds, per document, the published events waiting for a
	// write of their record to take them out of its outbox (Published,
	// TakenOut), or for the relay to remove them.
	parked map[string][]parked
}

// parked is a published event waiting to leave its outbox.
type parked struct {
	msg events.Message
	at  time.Time // when it was parked
}

// New returns a relay producing with client.
func New(cfg Config, client *kgo.Client, outbox Outbox, reg prometheus.Registerer, logger *slog.Logger, now func() time.Time) *Relay {
	cfg.defaults()
	r := &Relay{
		cfg:      cfg,
		client:   client,
		outbox:   outbox,
		logger:   logger,
		now:      now,
		queue:    make(chan item, cfg.QueueSize),
		kick:     make(chan struct{}, 1),
		acked:    make(chan item, cfg.QueueSize),
		inflight: map[string]struct{}{},
		parked:   map[string][]parked{},
	}
	r.metrics = newMetrics(reg, r)
	return r
}

// Enqueue hands freshly written events of documentID's outbox to the
// relay. It never blocks: when the queue is full the events stay in the
// store for the sweep.
func (r *Relay) Enqueue(documentID string, msgs ...events.Message) {
	for _, m := range msgs {
		if !r.claim(m.ID) {
			continue
		}
		select {
		case r.queue <- item{documentID: documentID, msg: m, enqueued: r.now()}:
		default:
			r.release(m.ID)
			r.dirty.Store(true)
			r.metrics.overflow.Inc()
			r.logger.Warn("relay queue full; event left for the sweep", slog.String("event_id", m.ID))
		}
	}
}

// Missed says events may wait in the outbox that nothing handed the
// relay: it sweeps them at its next check instead of its next interval.
func (r *Relay) Missed() { r.dirty.Store(true) }

// Published returns the ids of the published events of documentID's
// outbox that are waiting to leave it (see store.Published).
func (r *Relay) Published(documentID string) []string {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	ps := r.parked[documentID]
	if len(ps) == 0 {
		return nil
	}
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.msg.ID
	}
	return ids
}

// TakenOut says a write of documentID's record took the published events
// ids out of its outbox: they need no removal.
func (r *Relay) TakenOut(documentID string, ids []string) {
	if len(ids) == 0 {
		return
	}
	r.parkMu.Lock()
	var out []events.Message
	kept := r.parked[documentID][:0]
	for _, p := range r.parked[documentID] {
		if slices.Contains(ids, p.msg.ID) {
			out = append(out, p.msg)
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == 0 {
		delete(r.parked, documentID)
	} else {
		r.parked[documentID] = kept
	}
	r.parkMu.Unlock()
	r.metrics.takenOut.Add(float64(len(out)))
	r.removedFromOutbox(out)
}

// parkedIDs returns the ids of the parked events.
func (r *Relay) parkedIDs() map[string]struct{} {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	ids := map[string]struct{}{}
	for _, ps := range r.parked {
		for _, p := range ps {
			ids[p.msg.ID] = struct{}{}
		}
	}
	return ids
}

// park keeps the published events of batch (document id → events) for a
// write of their records to take out.
func (r *Relay) park(batch map[string][]events.Message) {
	now := r.now()
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	for documentID, msgs := range batch {
		for _, m := range msgs {
			r.parked[documentID] = append(r.parked[documentID], parked{msg: m, at: now})
		}
	}
}

// unpark takes out of the parked events those parked before cutoff (all
// of them when cutoff is zero), for the relay to remove.
func (r *Relay) unpark(cutoff time.Time) map[string][]events.Message {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	due := map[string][]events.Message{}
	for documentID, ps := range r.parked {
		i := 0
		for i < len(ps) && (cutoff.IsZero() || ps[i].at.Before(cutoff)) {
			due[documentID] = append(due[documentID], ps[i].msg)
			i++
		}
		switch {
		case i == len(ps):
			delete(r.parked, documentID)
		case i > 0:
			r.parked[documentID] = slices.Clone(ps[i:])
		}
	}
	return due
}

func (r *Relay) claim(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.inflight[id]; ok {
		return false
	}
	r.inflight[id] = struct{}{}
	return true
}

func (r *Relay) release(id string) {
	r.mu.Lock()
	delete(r.inflight, id)
	r.mu.Unlock()
}

// removedFromOutbox releases events that are published and gone from the
// outbox, and keeps a sweep reading now from claiming them again.
func (r *Relay) removedFromOutbox(msgs []events.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		delete(r.inflight, m.ID)
		if r.reading > 0 {
			r.removed[m.ID] = struct{}{}
		}
	}
}

// beginRead marks a sweep's read of the outboxes; the function it returns
// ends it.
func (r *Relay) beginRead() (end func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reading == 0 {
		r.removed = map[string]struct{}{}
	}
	r.reading++
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.reading--; r.reading == 0 {
			r.removed = nil
		}
	}
}

// Sweep hands the relay the events in the store's outboxes that are not
// already on their way: all of them when minAge is zero (at start, before
// any request is served, so that what a previous process left is
// published before anything new), else those older than minAge. They go
// to the backlog, oldest first, which Run publishes before the queue; the
// sweep waits for the store, never for the broker.
func (r *Relay) Sweep(ctx context.Context, minAge time.Duration) error {
	// An event on its way when the read begins may be acknowledged and
	// removed before the read ends: the read still returns it, and
	// claiming it then would publish it again.
	endRead := r.beginRead()
	defer endRead()
	pending, err := r.outbox.Pending(ctx)
	if err != nil {
		return err
	}
	found := r.claimSwept(pending, minAge)
	if len(found) == 0 {
		return nil
	}
	r.metrics.swept.Add(float64(len(found)))
	r.backlogMu.Lock()
	r.backlog = append(r.backlog, found...)
	r.backlogMu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return nil
}

// claimSwept claims the events a sweep read that nothing is publishing
// and that were not removed while it read, and notes what is pending.
func (r *Relay) claimSwept(pending []store.Pending, minAge time.Duration) []item {
	now := r.now()
	published := r.parkedIDs()
	r.mu.Lock()
	defer r.mu.Unlock()
	// What is pending is what waits to be published: parked events are
	// published, and only wait to leave their outbox.
	r.pending = 0
	r.oldest = time.Time{}
	for _, p := range pending {
		if _, ok := published[p.ID]; ok {
			continue
		}
		r.pending++
		if r.oldest.IsZero() || p.Time.Before(r.oldest) {
			r.oldest = p.Time
		}
	}
	found := make([]item, 0, len(pending))
	for _, p := range pending {
		if minAge > 0 && now.Sub(p.Time) < minAge {
			continue
		}
		if _, gone := r.removed[p.ID]; gone {
			continue
		}
		if _, ok := r.inflight[p.ID]; ok {
			continue
		}
		r.inflight[p.ID] = struct{}{}
		found = append(found, item{documentID: p.DocumentID, msg: p.Message, enqueued: now})
	}
	return found
}

// nextBacklog takes the oldest backlog item.
func (r *Relay) nextBacklog() (item, bool) {
	r.backlogMu.Lock()
	defer r.backlogMu.Unlock()
	if len(r.backlog) == 0 {
		return item{}, false
	}
	it := r.backlog[0]
	r.backlog[0] = item{}
	r.backlog = r.backlog[1:]
	if len(r.backlog) == 0 {
		r.backlog = nil
	}
	return it, true
}

// next takes the backlog's oldest item, else a queued one, without
// waiting.
func (r *Relay) next() (item, bool) {
	if it, ok := r.nextBacklog(); ok {
		return it, true
	}
	select {
	case it := <-r.queue:
		return it, true
	default:
		return item{}, false
	}
}

// Run publishes until ctx is done, the backlog before the queue. Then it
// produces what is left in memory, flushes the producer and records the
// acknowledgements it got, all within drain after ctx is done: with the
// broker down, the rest stays in the outbox for the next start.
func (r *Relay) Run(ctx context.Context, drain time.Duration) error {
	// Records are produced with a context of their own that ends drain
	// after ctx does: a Produce blocked on a full buffer while the broker
	// is down, and the records it holds, give up then, not never.
	pctx, stopProducing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProducing()
	stopTimer := context.AfterFunc(ctx, func() { time.AfterFunc(drainTimeout(drain), stopProducing) })
	defer stopTimer()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.removeAcked(pctx) }()
	go func() { defer wg.Done(); r.sweepLoop(ctx) }()

serve:
	for ctx.Err() == nil {
		if it, ok := r.nextBacklog(); ok {
			r.produce(pctx, it)
			continue
		}
		select {
		case it := <-r.queue:
			r.produce(pctx, it)
		case <-r.kick:
		case <-ctx.Done():
			break serve
		}
	}
	// Produce what is already in memory, then give the broker the rest of
	// the drain time to acknowledge.
	for pctx.Err() == nil {
		it, ok := r.next()
		if !ok {
			break
		}
		r.produce(pctx, it)
	}
	if err := r.client.Flush(pctx); err != nil {
		r.logger.Warn("relay flush incomplete; the outbox keeps the rest", slog.Any("err", err))
	}
	r.ackMu.Lock()
	r.ackClosed = true
	close(r.acked)
	r.ackMu.Unlock()
	// Removing what was acknowledged may take a while after a burst; it
	// gets what is left of the drain time, and what is left stays in the
	// outbox (the next start republishes it, and consumers absorb the
	// repeat).
	wg.Wait()
	return nil
}

func drainTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return 10 * time.Second
	}
	return d
}

func (r *Relay) produce(ctx context.Context, it item) {
	// ctx is the relay's producing context, not a request's: it ends
	// only when the drain time after shutdown is over. The record's own
	// context holds the trace of the request that wrote the event, which
	// the producer's tracing hook continues.
	rec := kafkarec.Record(it.msg, r.cfg.Topic)
	rec.Context = otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier{kafkarec.HeaderTraceparent: it.msg.Traceparent})
	r.client.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil {
			r.metrics.published.WithLabelValues("error").Inc()
			r.logger.Error("publish failed; the sweep will retry", slog.String("event_id", it.msg.ID), slog.Any("err", err))
			r.release(it.msg.ID)
			r.dirty.Store(true)
			return
		}
		r.metrics.published.WithLabelValues("ok").Inc()
		r.metrics.latency.Observe(r.now().Sub(it.enqueued).Seconds())
		r.ackMu.RLock()
		defer r.ackMu.RUnlock()
		if r.ackClosed {
			// Acknowledged after shutdown began: the event stays in the
			// outbox and is republished, which consumers absorb.
			r.release(it.msg.ID)
			return
		}
		r.acked <- it
	})
}

func (r *Relay) sweepLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.SweepCheck)
	defer t.Stop()
	last := r.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !r.dirty.Load() && r.now().Sub(last) < r.cfg.SweepInterval {
			continue
		}
		// What was dropped just now is younger than SweepMinAge; the
		// flag stays set until a sweep has seen past it.
		minAge := r.cfg.SweepMinAge
		if r.dirty.Load() {
			minAge = 0
		}
		r.dirty.Store(false)
		last = r.now()
		if err := r.Sweep(ctx, minAge); err != nil && ctx.Err() == nil {
			r.dirty.Store(true)
			r.logger.Warn("outbox sweep failed", slog.Any("err", err))
		}
	}
}

// removers bounds the consent publishes running at once.
const removers = 4

// removalBatch bounds the documents one outbox removal covers.
const removalBatch = 64

// removeAcked settles acknowledged events: the consent of a document
// whose events changed it goes out, then the events are parked for the
// next write of their record to take them out of its outbox, and those
// still parked after RemoveAfter are removed, batched across documents.
// When the acknowledgements end (shutdown) everything parked is removed.
// A failed removal is retried; if it keeps failing the events are left in
// the outbox and republished later, which consumers absorb.
func (r *Relay) removeAcked(ctx context.Context) {
	tick := time.NewTicker(min(max(r.cfg.RemoveAfter/4, 5*time.Millisecond), time.Second))
	defer tick.Stop()
	batch := map[string][]events.Message{}
	for {
		var it item
		ok := true
		select {
		case it, ok = <-r.acked:
		case <-tick.C:
			if due := r.unpark(r.now().Add(-r.cfg.RemoveAfter)); len(due) > 0 {
				r.remove(ctx, due)
			}
			continue
		}
		for n := 0; ok; n++ {
			batch[it.documentID] = append(batch[it.documentID], it.msg)
			if n == 512 {
				break
			}
			select {
			case it, ok = <-r.acked:
				continue
			default:
			}
			break
		}
		r.settle(ctx, batch)
		clear(batch)
		if !ok {
			r.remove(ctx, r.unpark(time.Time{}))
			return
		}
	}
}

// giveUp leaves msgs of documentID in its outbox for the sweep.
func (r *Relay) giveUp(what, documentID string, msgs []events.Message, err error) {
	r.dirty.Store(true)
	r.logger.Warn(what+"; events will be republished", slog.String("document_id", documentID), slog.Any("err", err))
	for _, m := range msgs {
		r.release(m.ID)
	}
}

// settle finishes acknowledged events of the outboxes of batch (document
// id → events): a document's consent goes out if they changed it, then
// they are parked, free to leave the outbox. The events of a document
// whose consent fails are released for the sweep.
func (r *Relay) settle(ctx context.Context, batch map[string][]events.Message) {
	// Documents are independent: a few consent publishes at once keep up
	// with the acknowledgements.
	var mu sync.Mutex
	ready := make(map[string][]events.Message, len(batch))
	var g errgroup.Group
	g.SetLimit(removers)
	for documentID, msgs := range batch {
		i := slices.IndexFunc(msgs, changesConsent)
		if i < 0 {
			ready[documentID] = msgs
			continue
		}
		g.Go(func() error {
			if err := r.publishConsent(ctx, msgs[i].AccountID, documentID); err != nil {
				r.metrics.consent.WithLabelValues("error").Inc()
				r.giveUp("consent publish failed", documentID, msgs, err)
				return nil
			}
			r.metrics.consent.WithLabelValues("ok").Inc()
			mu.Lock()
			ready[documentID] = msgs
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	r.park(ready)
}

// remove deletes the published events of batch (document id → events)
// from their outboxes, up to removalBatch documents per removal. The
// events of a document whose removal fails are released for the sweep.
func (r *Relay) remove(ctx context.Context, batch map[string][]events.Message) {
	ids := slices.Sorted(maps.Keys(batch))
	for chunk := range slices.Chunk(ids, removalBatch) {
		part := make(map[string][]events.Message, len(chunk))
		for _, id := range chunk {
			part[id] = batch[id]
		}
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if err = r.outbox.RemoveFromOutboxes(ctx, part); err == nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			}
		}
		for id, msgs := range part {
			if err != nil {
				r.giveUp("outbox removal failed", id, msgs, err)
				continue
			}
			r.metrics.removed.Add(float64(len(msgs)))
			r.removedFromOutbox(msgs)
		}
	}
}

// changesConsent reports whether m is an event that changed its
// document's consent: every opt-out and every consent change raises its
// version.
func changesConsent(m events.Message) bool {
	return m.Type == events.TypeOptOut || m.Type == events.TypeConsentChanged
}

// publishConsent produces documentID's consent as it reads now, keyed by
// account and document, and waits for the acknowledgement.
func (r *Relay) publishConsent(ctx context.Context, accountID, documentID string) error {
	consent, err := r.outbox.Consent(ctx, documentID)
	if err != nil {
		return err
	}
	rec, err := kafkarec.ConsentRecord(events.ConsentRecord{AccountID: accountID, DocumentID: documentID, Consent: consent})
	if err != nil {
		return err
	}
	rec.Topic = r.cfg.ConsentTopic
	return r.client.ProduceSync(ctx, rec).FirstErr()
}
