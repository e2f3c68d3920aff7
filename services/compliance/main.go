// Command compliance is the compliance service: it turns
// rcm.campaign-events.v1 into an insert-only, hash-chained, verifiable log
// per account, and serves that log and its verification to the gateway.
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
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/obs"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/compliance/internal/api"
	"github.com/rcm-platform/rcm/services/compliance/internal/consumer"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		slog.Error("compliance stopped", "err", err)
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
	Group          string
	CreateTopics   bool
	Partitions     int
	MaxBatch       int
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
		HTTPAddr:       r.String("RCM_HTTP_ADDR", "127.0.0.1:8082"),
		MongoURI:       r.String("RCM_MONGODB_URI", "mongodb://127.0.0.1:27017/"),
		MongoDatabase:  r.String("RCM_MONGODB_DATABASE", "rcm_compliance"),
		CreateIndexes:  r.Bool("RCM_MONGODB_CREATE_INDEXES", true),
		InternalSecret: r.String("RCM_INTERNAL_SECRET", ""),
		EventsTopic:    r.String("RCM_EVENTS_TOPIC", events.Topic),
		DLQTopic:       r.String("RCM_DLQ_TOPIC", events.DLQTopic),
		Group:          r.String("RCM_COMPLIANCE_GROUP", "rcm-compliance"),
		CreateTopics:   r.Bool("RCM_KAFKA_CREATE_TOPICS", true),
		Partitions:     r.Int("RCM_KAFKA_PARTITIONS", 6),
		MaxBatch:       r.Int("RCM_COMPLIANCE_MAX_BATCH", 1000),
		DrainTimeout:   r.Duration("RCM_DRAIN_TIMEOUT", 10*time.Second),
		LagInterval:    r.Duration("RCM_KAFKA_LAG_INTERVAL", 10*time.Second),
		InstanceID:     r.String("RCM_KAFKA_INSTANCE_ID", ""),
		SessionTimeout: r.Duration("RCM_KAFKA_SESSION_TIMEOUT", 10*time.Second),
		PprofAddr:      r.String("RCM_PPROF_ADDR", ""),
		LogLevel:       r.String("RCM_LOG_LEVEL", "info"),
	}
	kafka, err := kafkax.ConnFromEnv(getenv)
	c.Kafka = kafka
	return c, errors.Join(r.Err(), err)
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	logger := obs.NewLogger(stdout, "compliance", cfg.LogLevel)
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
	led := ledger.New(ledger.Config{DB: mc.Database(cfg.MongoDatabase), Now: time.Now})

	forget := func(context.Context, *kgo.Client, map[string][]int32) { led.Forget() }
	client, err := kafkax.NewClient(cfg.Kafka, "rcm-compliance", reg, logger,
		append(kafkax.GroupOpts(cfg.Group, cfg.EventsTopic, cfg.InstanceID, cfg.SessionTimeout),
			kgo.OnPartitionsRevoked(forget), kgo.OnPartitionsLost(forget))...)
	if err != nil {
		return err
	}
	defer client.Close()
	health.Add("kafka", func(ctx context.Context) error { return client.Ping(ctx) })
	cons := consumer.New(consumer.Config{Ledger: led, DeadLetter: kafkax.DeadLetter(client, cfg.DLQTopic), Now: time.Now, Logger: logger}, reg)

	lag := kafkax.NewLagMonitor(client, cfg.Group, cfg.LagInterval, reg, logger)

	var started atomic.Bool
	health.Add("started", func(context.Context) error {
		if !started.Load() {
			return errors.New("starting")
		}
		return nil
	})

	router := httpx.NewRouter(logger, httpx.NewHTTPMetrics(reg, "compliance"), 30*time.Second)
	obs.Mount(router, health, reg)
	router.Group(func(r chi.Router) {
		r.Use(signer.Require(logger))
		(&api.Handler{Ledger: led, Logger: logger}).Routes(r)
	})

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	logger.Info("compliance listening", slog.String("addr", ln.Addr().String()))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return obs.ServePprof(gctx, cfg.PprofAddr, logger) })
	g.Go(func() error { return httpx.Serve(gctx, httpx.NewServer(router), ln, cfg.DrainTimeout) })
	g.Go(func() error {
		if err := startup(gctx, cfg, led, client, logger); err != nil || gctx.Err() != nil {
			return err
		}
		started.Store(true)
		logger.Info("compliance ready")
		return kafkax.ConsumeLoop(gctx, client, cfg.MaxBatch, cons.Handle, logger)
	})
	g.Go(func() error { lag.Run(gctx); return nil })
	err = g.Wait()
	logger.Info("compliance stopped")
	return err
}

// startup makes the indexes and topics, retrying while the store or the
// broker cannot be reached.
func startup(ctx context.Context, cfg config, led *ledger.Ledger, cl *kgo.Client, logger *slog.Logger) error {
	return kafkax.Retry(ctx, logger, "indexes and topics", func(ctx context.Context) error {
		if cfg.CreateIndexes {
			if err := led.EnsureIndexes(ctx); err != nil {
				return err
			}
		}
		if !cfg.CreateTopics {
			return nil
		}
		return kafkax.EnsureTopics(ctx, cl,
			kafkax.Topic{Name: cfg.EventsTopic, Partitions: int32(cfg.Partitions)},
			kafkax.Topic{Name: cfg.DLQTopic, Partitions: 1},
		)
	})
}
