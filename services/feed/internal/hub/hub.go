// Package hub fans the activity items out live to the subscribers of each
// account connected to this instance. Every feed instance follows the whole
// internal activity topic (no consumer group), so a subscriber receives its
// account's items whichever instance stored them and whichever instance it
// is connected to. Delivery never blocks: a subscriber that falls behind is
// dropped, and its client resumes from history with Last-Event-ID.
package hub

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/services/feed/internal/activity"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultBuffer is how many items a subscriber may have waiting before it
// is dropped.
const DefaultBuffer = 256

// ErrSlow is why a subscriber that fell behind was dropped.
var ErrSlow = errors.New("subscriber too slow: its buffer is full")

// Entry is one item as the hub hands it out, with its JSON encoding made
// once for every subscriber.
type Entry struct {
	Item activity.Item
	JSON []byte
}

// Hub holds the subscribers of each account.
type Hub struct {
	buffer int

	mu   sync.Mutex
	subs map[string]map[*Subscription]struct{}
	// heads holds, for accounts with subscribers, a head learnt from the
	// store and raised by every item published since: every item up to
	// it is stored, and every item after it is yet to be published here.
	heads map[string]int64

	subscribers prometheus.Gauge
	dropped     prometheus.Counter
	published   prometheus.Counter
}

// New returns a Hub letting each subscriber have up to buffer items
// waiting (DefaultBuffer when 0), with its metrics registered on reg.
func New(buffer int, reg prometheus.Registerer) *Hub {
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	h := &Hub{
		buffer: buffer,
		subs:   map[string]map[*Subscription]struct{}{},
		heads:  map[string]int64{},
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rcm_feed_subscribers", Help: "Live subscribers connected to this instance.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_dropped_subscribers_total", Help: "Subscribers dropped because their buffer was full.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_feed_hub_items_total", Help: "Activity items handed to the hub for live fan-out.",
		}),
	}
	reg.MustRegister(h.subscribers, h.dropped, h.published)
	return h
}

// Subscription is one subscriber's live items of one account. What it
// costs while it waits is a few words: the items waiting are pointers to
// the entry every subscriber of the account shares, in a slice grown only
// when items wait, and a one-slot channel says that there are some.
type Subscription struct {
	hub     *Hub
	account string
	ready   chan struct{} // holds a token when waiting or err is new

	// head and known are the account's head as the hub knew it when
	// subscribing; top is the highest seq published to this subscriber
	// (both under the hub's lock).
	head  int64
	known bool
	top   int64
	// notify, when set, is called instead of filling ready.
	notify func()

	mu      sync.Mutex
	waiting []*Entry
	err     error // why the hub dropped the subscriber
}

// Head returns the account's head as the hub knew it when s subscribed,
// and whether it knew one: then every item up to it is stored and every
// item after it reaches s. Otherwise the subscriber reads the head from
// the store, after subscribing, and tells the hub with Learn.
func (s *Subscription) Head() (int64, bool) { return s.head, s.known }

// Learn tells the hub the head that s read from the store after it
// subscribed: every item up to it was stored then, and every later one
// was published after s subscribed, so that it reached s. The hub keeps
// the account's head from then on, while the account has subscribers.
func (s *Subscription) Learn(head int64) {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s.account][s]; !ok {
		return // dropped: what it was published is not known
	}
	head = max(head, s.top)
	if cur, ok := h.heads[s.account]; ok {
		head = max(head, cur)
	}
	h.heads[s.account] = head
}

// Ready receives when items wait or the subscriber was dropped: then
// Take tells which.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take returns the items waiting, in the order the hub received them,
// and, once the hub dropped the subscriber, why: the items it had before
// come with the reason, and nothing comes after.
func (s *Subscription) Take() ([]*Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.waiting
	s.waiting = nil
	return out, s.err
}

// Close unsubscribes. It is safe to call more than once, also after the hub
// dropped the subscriber.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.remove(s, nil)
}

// Subscribe returns a subscription to account's items from now on.
func (h *Hub) Subscribe(account string) *Subscription {
	return h.subscribe(&Subscription{hub: h, account: account, ready: make(chan struct{}, 1)})
}

// SubscribeFunc is Subscribe with notify called, in place of Ready
// receiving, when items wait or the subscriber is dropped. notify is
// called with the hub's lock held: it must not block nor call the hub.
func (h *Hub) SubscribeFunc(account string, notify func()) *Subscription {
	return h.subscribe(&Subscription{hub: h, account: account, notify: notify})
}

func (h *Hub) subscribe(s *Subscription) *Subscription {
	account := s.account
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[account]
	if set == nil {
		set = map[*Subscription]struct{}{}
		h.subs[account] = set
	}
	set[s] = struct{}{}
	s.head, s.known = h.heads[account]
	h.subscribers.Inc()
	return s
}

// remove drops s, telling it err when err is not nil. h.mu must be held.
func (h *Hub) remove(s *Subscription, err error) {
	set := h.subs[s.account]
	if _, ok := set[s]; !ok {
		return
	}
	delete(set, s)
	if len(set) == 0 {
		delete(h.subs, s.account)
		delete(h.heads, s.account)
	}
	h.subscribers.Dec()
	if err != nil {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		s.signal()
	}
}

// signal makes Ready receive, once however many items came meanwhile.
func (s *Subscription) signal() {
	if s.notify != nil {
		s.notify()
		return
	}
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Publish hands e to every subscriber of account without waiting for any:
// a subscriber that already has the buffer's worth of items waiting is
// dropped with ErrSlow.
func (h *Hub) Publish(account string, e Entry) {
	h.published.Inc()
	shared := &e
	seq := e.Item.Seq
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.heads[account]; ok && seq > cur {
		h.heads[account] = seq
	}
	for s := range h.subs[account] {
		s.top = max(s.top, seq)
		s.mu.Lock()
		full := len(s.waiting) >= h.buffer
		if !full {
			s.waiting = append(s.waiting, shared)
		}
		s.mu.Unlock()
		if full {
			h.remove(s, ErrSlow)
			h.dropped.Inc()
			continue
		}
		s.signal()
	}
}

// forgetHeads drops the heads known, which new subscribers then read from
// the store.
func (h *Hub) forgetHeads() {
	h.mu.Lock()
	clear(h.heads)
	h.mu.Unlock()
}

// Follow feeds the hub from cl, a client that consumes the activity topic
// without a consumer group, until ctx is done. A record is keyed by its
// account and holds the item's JSON; one that is not is logged and
// skipped, as nothing but the feed writes that topic.
func (h *Hub) Follow(ctx context.Context, cl *kgo.Client, logger *slog.Logger) error {
	for {
		fetches := cl.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			logger.Warn("fetch error", slog.String("topic", topic), slog.Int("partition", int(partition)), slog.Any("err", err))
			// Records may have been skipped: the heads known may be
			// short of what was published.
			h.forgetHeads()
		})
		fetches.EachRecord(func(r *kgo.Record) {
			var it activity.Item
			if err := json.Unmarshal(r.Value, &it); err != nil || it.Seq <= 0 || len(r.Key) == 0 {
				logger.Warn("unusable activity record skipped", slog.String("topic", r.Topic),
					slog.Int("partition", int(r.Partition)), slog.Int64("offset", r.Offset), slog.Any("err", err))
				return
			}
			// Encoded again rather than passed through, so that what
			// subscribers get is exactly the item type's JSON, one line.
			data, err := json.Marshal(it)
			if err != nil {
				return
			}
			h.Publish(string(r.Key), Entry{Item: it, JSON: data})
		})
	}
}
