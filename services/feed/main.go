// Command feed is the feed service: it turns rcm.campaign-events.v1 into a
// stored activity history per account, serves it newest first, and streams
// it live over Server-Sent Events to the account's subscribers on every
// instance.
package main

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/service"
	"github.com/rcm-platform/rcm/services/feed/internal/api"
	"github.com/rcm-platform/rcm/services/feed/internal/consumer"
	"github.com/rcm-platform/rcm/services/feed/internal/hub"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
	"github.com/rcm-platform/rcm/services/feed/internal/tickets"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() { service.Main("feed", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	startedAt := time.Now()
	cfg := config{
		Base: service.Base{HTTPAddr: "127.0.0.1:8083"}, Mongo: service.Mongo{Database: "rcm_feed"},
		EventsTopic: events.Topic, DLQTopic: events.DLQTopic, Heartbeat: api.DefaultHeartbeat, MaxStreams: api.DefaultMaxStreams,
	}
	svc, err := service.Start(ctx, "feed", getenv, stdout, &cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	items := store.New(store.Config{DB: svc.DB(), Now: time.Now})

	producer, err := svc.Producer("rcm-feed-producer")
	if err != nil {
		return err
	}
	// A partition that moves to another instance takes its accounts with
	// it: forget their heads, so that they are read afresh if it comes back.
	forget := func(context.Context, *kgo.Client, map[string][]int32) { items.Forget() }
	eventsConsumer, err := svc.Consumer("rcm-feed-consumer", cfg.Group, cfg.EventsTopic,
		kgo.OnPartitionsRevoked(forget), kgo.OnPartitionsLost(forget))
	if err != nil {
		return err
	}
	// Every instance follows the whole activity topic, without a group, from
	// the end as it was at start: what came before is history, served from
	// the store, and nothing published after the start is missed.
	follower, err := svc.Client("rcm-feed-hub", kgo.ConsumeTopics(cfg.ActivityTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(startedAt.UnixMilli())), kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		return err
	}

	h := hub.New(hub.DefaultBuffer, svc.Registry)
	handler := consumer.New(consumer.Config{
		Store: items, Producer: producer, ActivityTopic: cfg.ActivityTopic,
		DeadLetter: kafkax.DeadLetter(producer, cfg.DLQTopic), Logger: svc.Logger,
	}, svc.Registry)
	// Shutdown waits for responses to finish, and a stream finishes only
	// when told to.
	streamsDone := make(chan struct{})
	activityAPI := api.New(api.Config{Store: items, Hub: h, Heartbeat: cfg.Heartbeat, MaxStreams: cfg.MaxStreams,
		Stop: streamsDone, Now: time.Now, Logger: svc.Logger}, svc.Registry)
	mux := http.NewServeMux()
	// A stream opened with a ticket claims it first: one stream per ticket.
	streamTickets := tickets.New(svc.DB().Collection(tickets.Collection), time.Now)
	mux.Handle("/v1/activity/stream", svc.Signed(0, func(r chi.Router) { // no request deadline
		r.Use(streamTickets.Middleware(svc.Logger))
		activityAPI.StreamRoutes(r)
	}))
	mux.Handle("/", svc.Internal(15*time.Second, activityAPI.Routes))

	return svc.Run(ctx, service.Parts{
		Handler:    mux,
		OnShutdown: func() { close(streamsDone) },
		Prepare: []service.Step{
			service.Indexes(cfg.CreateIndexes, items.EnsureIndexes),
			svc.Topics([]string{cfg.EventsTopic, cfg.ActivityTopic}, cfg.DLQTopic),
		},
		Background: []service.Loop{
			func(ctx context.Context) error { return h.Follow(ctx, follower, svc.Logger) },
			// Streams taken over from net/http are not drained by it:
			// once it has drained, wait for them to write their last
			// chunk.
			func(ctx context.Context) error {
				<-ctx.Done()
				wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				activityAPI.Wait(wctx)
				return nil
			},
			// Partitions hold different accounts, and the store and the
			// producer take concurrent calls: one partition's round trips
			// need not wait for another's.
			func(ctx context.Context) error {
				return kafkax.ConsumeLoop(ctx, eventsConsumer, 1000, handler.Handle, svc.Logger, kafkax.PartitionsAtOnce(cfg.Partitions))
			},
		},
	})
}
