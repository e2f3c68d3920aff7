// Command campaign is the campaign service: it owns campaigns and the
// documents read model, writes every command with its event in one
// single-document write, and relays the events to Kafka.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/envconfig"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/obs"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/campaign/internal/api"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/documents"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
	"github.com/rcm-platform/rcm/services/campaign/internal/nonces"
	"github.com/rcm-platform/rcm/services/campaign/internal/relay"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		slog.Error("campaign stopped", "err", err)
		os.Exit(1)
	}
}

type config struct {
	HTTPAddr       string
	Kafka          kafkax.Conn
	MongoURI       string
	MongoDatabase  string
	InternalSecret string
	EventsTopic    string
	DocumentsTopic string
	DocumentsDLQ   string
	DocumentsGroup string
	CreateTopics   bool
	Partitions     int
	SweepInterval  time.Duration
	SweepMinAge    time.Duration
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
		HTTPAddr:       r.String("RCM_HTTP_ADDR", "127.0.0.1:8081"),
		MongoURI:       r.String("RCM_MONGODB_URI", "mongodb://127.0.0.1:27017/"),
		MongoDatabase:  r.String("RCM_MONGODB_DATABASE", "rcm_campaign"),
		InternalSecret: r.String("RCM_INTERNAL_SECRET", ""),
		EventsTopic:    r.String("RCM_EVENTS_TOPIC", events.Topic),
		DocumentsTopic: r.String("RCM_DOCUMENTS_TOPIC", "documents.v1"),
		DocumentsGroup: r.String("RCM_DOCUMENTS_GROUP", "rcm-campaign"),
		CreateTopics:   r.Bool("RCM_KAFKA_CREATE_TOPICS", true),
		Partitions:     r.Int("RCM_KAFKA_PARTITIONS", 6),
		SweepInterval:  r.Duration("RCM_OUTBOX_SWEEP_INTERVAL", 5*time.Minute),
		SweepMinAge:    r.Duration("RCM_OUTBOX_SWEEP_MIN_AGE", 30*time.Second),
		DrainTimeout:   r.Duration("RCM_DRAIN_TIMEOUT", 10*time.Second),
		LagInterval:    r.Duration("RCM_KAFKA_LAG_INTERVAL", 10*time.Second),
		InstanceID:     r.String("RCM_KAFKA_INSTANCE_ID", ""),
		SessionTimeout: r.Duration("RCM_KAFKA_SESSION_TIMEOUT", 10*time.Second),
		PprofAddr:      r.String("RCM_PPROF_ADDR", ""),
		LogLevel:       r.String("RCM_LOG_LEVEL", "info"),
	}
	c.DocumentsDLQ = r.String("RCM_DOCUMENTS_DLQ_TOPIC", "rcm."+c.DocumentsTopic+".dlq")
	kafka, err := kafkax.ConnFromEnv(getenv)
	c.Kafka = kafka
	return c, errors.Join(r.Err(), err)
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	logger := obs.NewLogger(stdout, "campaign", cfg.LogLevel)
	signer, err := principal.ForService(cfg.InternalSecret, logger)
	if err != nil {
		return err
	}
	reg := obs.NewRegistry()
	health := obs.NewHealth()

	mc, disconnect, err := mongox.Dial(cfg.MongoURI, reg)
	if err != nil {
		return err
	}
	defer disconnect()
	health.Add("mongodb", mongox.Ping(mc))
	st := store.New(mc.Database(cfg.MongoDatabase))
	idem := idempotency.New(mc.Database(cfg.MongoDatabase), time.Now)
	signer.GuardWrites(nonces.New(mc.Database(cfg.MongoDatabase).Collection("principal_nonces"), time.Now))

	producer, err := kafkax.NewClient(cfg.Kafka, "rcm-campaign-relay", reg, logger,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return err
	}
	defer producer.Close()
	health.Add("kafka", func(ctx context.Context) error { return producer.Ping(ctx) })

	consumer, err := kafkax.NewClient(cfg.Kafka, "rcm-campaign-documents", reg, logger,
		kafkax.GroupOpts(cfg.DocumentsGroup, cfg.DocumentsTopic, cfg.InstanceID, cfg.SessionTimeout)...)
	if err != nil {
		return err
	}
	defer consumer.Close()

	gen := ids.NewGenerator(time.Now)
	rl := relay.New(relay.Config{Topic: cfg.EventsTopic, SweepInterval: cfg.SweepInterval, SweepMinAge: cfg.SweepMinAge},
		producer, st, reg, logger, time.Now)
	campaigns := app.New(app.Config{Store: st, Relay: rl, Claims: idem, NewID: gen.New, Now: time.Now, Logger: logger, Registerer: reg})
	docs := documents.NewConsumer(documents.ConsumerConfig{Documents: campaigns, DeadLetter: kafkax.DeadLetter(producer, cfg.DocumentsDLQ), Logger: logger}, reg)

	lag := kafkax.NewLagMonitor(consumer, cfg.DocumentsGroup, cfg.LagInterval, reg, logger)

	var started atomic.Bool
	health.Add("started", func(context.Context) error {
		if !started.Load() {
			return errors.New("starting")
		}
		return nil
	})

	router := httpx.NewRouter(logger, httpx.NewHTTPMetrics(reg, "campaign"), 15*time.Second)
	obs.Mount(router, health, reg)
	router.Group(func(r chi.Router) {
		r.Use(signer.Require(logger))
		(&api.Handler{Campaigns: campaigns, Logger: logger, Ready: started.Load}).Routes(r)
	})

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	logger.Info("campaign listening", slog.String("addr", ln.Addr().String()))

	// Shutdown order: stop serving and drain in-flight requests, then stop
	// the relay (it flushes the producer) and the consumer (it commits).
	serveDone := make(chan struct{})
	backgroundCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return obs.ServePprof(gctx, cfg.PprofAddr, logger) })
	g.Go(func() error {
		defer close(serveDone)
		return httpx.Serve(gctx, httpx.NewServer(router), ln, cfg.DrainTimeout)
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
		if err := startup(backgroundCtx, cfg, st, producer, rl, logger); err != nil || backgroundCtx.Err() != nil {
			return err
		}
		started.Store(true)
		logger.Info("campaign ready")
		bg, bctx := errgroup.WithContext(backgroundCtx)
		bg.Go(func() error { return rl.Run(bctx, cfg.DrainTimeout) })
		bg.Go(func() error { return kafkax.ConsumeLoop(bctx, consumer, 1000, docs.Handle, logger) })
		bg.Go(func() error { lag.Run(bctx); return nil })
		bg.Go(func() error { sweepIdempotency(bctx, idem, logger); return nil })
		return bg.Wait()
	})
	err = g.Wait()
	logger.Info("campaign stopped")
	return err
}

// startup prepares the store and the topics, retrying while they are
// unreachable, and queues what a previous process left in the outbox before
// any new command is accepted.
func startup(ctx context.Context, cfg config, st *store.Store, producer *kgo.Client, rl *relay.Relay, logger *slog.Logger) error {
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"store", st.EnsureIndexes},
		{"topics", func(ctx context.Context) error {
			if !cfg.CreateTopics {
				return nil
			}
			return kafkax.EnsureTopics(ctx, producer,
				kafkax.Topic{Name: cfg.EventsTopic, Partitions: int32(cfg.Partitions)},
				kafkax.Topic{Name: cfg.DocumentsTopic, Partitions: int32(cfg.Partitions)},
				kafkax.Topic{Name: cfg.DocumentsDLQ, Partitions: 1},
			)
		}},
		{"outbox", func(ctx context.Context) error { return rl.Sweep(ctx, 0) }},
	}
	for _, s := range steps {
		if err := kafkax.Retry(ctx, logger, s.name, s.fn); err != nil || ctx.Err() != nil {
			return err
		}
	}
	return nil
}

// sweepIdempotency deletes expired Idempotency-Key claims every hour.
func sweepIdempotency(ctx context.Context, idem *idempotency.Store, logger *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := idem.Sweep(ctx); err != nil {
			logger.Warn("idempotency sweep failed", slog.Any("err", err))
		} else if n > 0 {
			logger.Info("expired idempotency keys deleted", slog.Int64("count", n))
		}
	}
}
