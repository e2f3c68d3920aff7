// Command feed is the feed service: it turns rcm.campaign-events.v1 into a
// stored activity history per account, serves it newest first, and streams
// it live over Server-Sent Events to the account's subscribers on every
// instance.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/envconfig"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/obs"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/feed/internal/api"
	"github.com/rcm-platform/rcm/services/feed/internal/consumer"
	"github.com/rcm-platform/rcm/services/feed/internal/hub"
	"github.com/rcm-platform/rcm/services/feed/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		slog.Error("feed stopped", "err", err)
		os.Exit(1)
	}
}

type config struct {
	HTTPAddr       string
	Kafka          kafkax.Conn
	MongoURI       string
	MongoDatabase  string
	CreateIndexes  bool
	InternalSecret string
	EventsTopic    string
	DLQTopic       string
	ActivityTopic  string
	Group          string
	Partitions     int
	CreateTopics   bool
	Heartbeat      time.Duration
	MaxStreams     int
	DrainTimeout   time.Duration
	LagInterval    time.Duration
	InstanceID     string
	SessionTimeout time.Duration
	PprofAddr      string
	LogLevel       string
}

func loadConfig(getenv func(string) string) (config, error) {
	r := envconfig.New(getenv)
	c := config{
		HTTPAddr:       r.String("RCM_HTTP_ADDR", "127.0.0.1:8083"),
		MongoURI:       r.String("RCM_MONGODB_URI", "mongodb://127.0.0.1:27017/"),
		MongoDatabase:  r.String("RCM_MONGODB_DATABASE", "rcm_feed"),
		CreateIndexes:  r.Bool("RCM_MONGODB_CREATE_INDEXES", true),
		InternalSecret: r.String("RCM_INTERNAL_SECRET", ""),
		EventsTopic:    r.String("RCM_EVENTS_TOPIC", events.Topic),
		DLQTopic:       r.String("RCM_DLQ_TOPIC", events.DLQTopic),
		ActivityTopic:  r.String("RCM_ACTIVITY_TOPIC", "rcm.activity.v1"),
		Group:          r.String("RCM_FEED_GROUP", "rcm-feed"),
		Partitions:     r.Int("RCM_KAFKA_PARTITIONS", 6),
		CreateTopics:   r.Bool("RCM_KAFKA_CREATE_TOPICS", true),
		Heartbeat:      r.Duration("RCM_SSE_HEARTBEAT", api.DefaultHeartbeat),
		MaxStreams:     r.Int("RCM_FEED_MAX_STREAMS", api.DefaultMaxStreams),
		DrainTimeout:   r.Duration("RCM_DRAIN_TIMEOUT", 10*time.Second),
		LagInterval:    r.Duration("RCM_KAFKA_LAG_INTERVAL", 10*time.Second),
		InstanceID:     r.String("RCM_KAFKA_INSTANCE_ID", ""),
		SessionTimeout: r.Duration("RCM_KAFKA_SESSION_TIMEOUT", 10*time.Second),
		PprofAddr:      r.String("RCM_PPROF_ADDR", ""),
		LogLevel:       r.String("RCM_LOG_LEVEL", "info"),
	}
	kafka, err := kafkax.ConnFromEnv(getenv)
	if err := errors.Join(r.Err(), err); err != nil {
		return c, err
	}
	c.Kafka = kafka
	if c.Partitions < 1 {
		return c, fmt.Errorf("RCM_KAFKA_PARTITIONS=%d: want at least 1", c.Partitions)
	}
	if c.MaxStreams < 1 {
		return c, fmt.Errorf("RCM_FEED_MAX_STREAMS=%d: want at least 1", c.MaxStreams)
	}
	if c.Heartbeat <= 0 {
		return c, fmt.Errorf("RCM_SSE_HEARTBEAT=%s: want a positive duration", c.Heartbeat)
	}
	return c, nil
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	logger := obs.NewLogger(stdout, "feed", cfg.LogLevel)
	signer, err := principal.ForService(cfg.InternalSecret, logger)
	if err != nil {
		return err
	}
	reg := obs.NewRegistry()
	health := obs.NewHealth()
	startedAt := time.Now()

	mc, disconnect, err := mongox.Dial(cfg.MongoURI, reg)
	if err != nil {
		return err
	}
	defer disconnect()
	health.Add("mongodb", mongox.Ping(mc))
	db := mc.Database(cfg.MongoDatabase)
	items := store.New(store.Config{DB: db, Now: time.Now})

	producer, err := kafkax.NewClient(cfg.Kafka, "rcm-feed-producer", reg, logger,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return err
	}
	defer producer.Close()
	health.Add("kafka", func(ctx context.Context) error { return producer.Ping(ctx) })

	// A partition that moves to another instance takes its accounts with
	// it: forget their heads, so that they are read afresh if it comes
	// back.
	forget := func(context.Context, *kgo.Client, map[string][]int32) { items.Forget() }
	eventsConsumer, err := kafkax.NewClient(cfg.Kafka, "rcm-feed-consumer", reg, logger,
		append(kafkax.GroupOpts(cfg.Group, cfg.EventsTopic, cfg.InstanceID, cfg.SessionTimeout),
			kgo.OnPartitionsRevoked(forget), kgo.OnPartitionsLost(forget))...)
	if err != nil {
		return err
	}
	defer eventsConsumer.Close()

	// Every instance follows the whole activity topic, without a group,
	// from the end as it was when this instance started: what was
	// published earlier is history, served from the store. A fixed
	// instant rather than "the end whenever the client gets there" means
	// no item published after the start is missed, however long the
	// topic takes to appear.
	follower, err := kafkax.NewClient(cfg.Kafka, "rcm-feed-hub", reg, logger,
		kgo.ConsumeTopics(cfg.ActivityTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(startedAt.UnixMilli())),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return err
	}
	defer follower.Close()

	lag := kafkax.NewLagMonitor(eventsConsumer, cfg.Group, cfg.LagInterval, reg, logger)
	h := hub.New(hub.DefaultBuffer, reg)
	handler := consumer.New(consumer.Config{
		Store:         items,
		Producer:      producer,
		ActivityTopic: cfg.ActivityTopic,
		DeadLetter:    kafkax.DeadLetter(producer, cfg.DLQTopic),
		Logger:        logger,
	}, reg)

	var started atomic.Bool
	health.Add("started", func(context.Context) error {
		if !started.Load() {
			return errors.New("starting")
		}
		return nil
	})

	streamsDone := make(chan struct{})
	var stopStreams sync.Once
	activityAPI := api.New(api.Config{
		Store: items, Hub: h, Heartbeat: cfg.Heartbeat, MaxStreams: cfg.MaxStreams, Stop: streamsDone, Now: time.Now, Logger: logger,
	}, reg)
	requirePrincipal := signer.Require(logger)
	httpMetrics := httpx.NewHTTPMetrics(reg, "feed")
	router := httpx.NewRouter(logger, httpMetrics, 15*time.Second)
	obs.Mount(router, health, reg)
	router.Group(func(r chi.Router) {
		r.Use(requirePrincipal)
		activityAPI.Routes(r)
	})
	// The stream has a router of its own, without the request deadline.
	streamRouter := httpx.NewRouter(logger, httpMetrics, 0)
	streamRouter.Group(func(r chi.Router) {
		r.Use(requirePrincipal)
		activityAPI.StreamRoutes(r)
	})
	mux := http.NewServeMux()
	mux.Handle("/v1/activity/stream", streamRouter)
	mux.Handle("/", router)
	srv := httpx.NewServer(mux)
	// Shutdown waits for responses to finish, and a stream finishes only
	// when told to.
	srv.RegisterOnShutdown(func() { stopStreams.Do(func() { close(streamsDone) }) })

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	logger.Info("feed listening", slog.String("addr", ln.Addr().String()))

	// Shutdown order: stop serving (streams end) and drain in-flight
	// requests, then stop the consumer (it commits what it stored) and the
	// hub's follower, then close the clients and the store.
	serveDone := make(chan struct{})
	backgroundCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return obs.ServePprof(gctx, cfg.PprofAddr, logger) })
	g.Go(func() error {
		defer close(serveDone)
		return httpx.Serve(gctx, srv, ln, cfg.DrainTimeout)
	})
	g.Go(func() error {
		select {
		case <-serveDone:
		case <-gctx.Done():
			<-serveDone
		}
		stopBackground()
		return nil
	})
	g.Go(func() error {
		if err := startup(backgroundCtx, cfg, items, producer, logger); err != nil || backgroundCtx.Err() != nil {
			return err
		}
		bg, bctx := errgroup.WithContext(backgroundCtx)
		bg.Go(func() error { return h.Follow(bctx, follower, logger) })
		bg.Go(func() error { return kafkax.ConsumeLoop(bctx, eventsConsumer, 1000, handler.Handle, logger) })
		bg.Go(func() error { lag.Run(bctx); return nil })
		started.Store(true)
		logger.Info("feed ready")
		return bg.Wait()
	})
	err = g.Wait()
	logger.Info("feed stopped")
	return err
}

// startup makes the indexes and topics, retrying while the store or the
// broker cannot be reached.
func startup(ctx context.Context, cfg config, items *store.Store, cl *kgo.Client, logger *slog.Logger) error {
	return kafkax.Retry(ctx, logger, "indexes and topics", func(ctx context.Context) error {
		if cfg.CreateIndexes {
			if err := items.EnsureIndexes(ctx); err != nil {
				return err
			}
		}
		if !cfg.CreateTopics {
			return nil
		}
		return kafkax.EnsureTopics(ctx, cl,
			kafkax.Topic{Name: cfg.EventsTopic, Partitions: int32(cfg.Partitions)},
			kafkax.Topic{Name: cfg.ActivityTopic, Partitions: int32(cfg.Partitions)},
			kafkax.Topic{Name: cfg.DLQTopic, Partitions: 1},
		)
	})
}
