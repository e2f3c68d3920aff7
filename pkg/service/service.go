// Package service is the skeleton every RCM service runs on: its base
// configuration read from the environment, the start-up that gives it a
// logger, a metrics registry, health checks, the principal signer and its
// clients, one readiness gate, and Run, which owns the order of shutdown.
//
// A service's main only names its parts:
//
//	var cfg Config // embeds service.Base (and service.Kafka, service.Mongo)
//	svc, err := service.Start(ctx, "compliance", getenv, stdout, &cfg)
//	if err != nil {
//		return err
//	}
//	defer svc.Close()
//	…
//	return svc.Run(ctx, service.Parts{Handler: h, Prepare: steps, Background: loops})
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/mongox"
	"github.com/rcm-platform/rcm/pkg/obs"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Service is a started service: what every part of it is built from.
type Service struct {
	Name     string
	Logger   *slog.Logger
	Registry *prometheus.Registry
	Health   *obs.Health
	Signer   *principal.Signer

	base  *Base
	kafka *Kafka
	conn  kafkax.Conn
	mongo *mongo.Client
	db    string

	httpMetrics *httpx.HTTPMetrics
	started     atomic.Bool

	mu            sync.Mutex
	clients       []*kgo.Client // in creation order
	lags          []*kafkax.LagMonitor
	closeOnce     sync.Once
	disconnect    func()
	stopTelemetry func(context.Context) error
}

// Start reads cfg from getenv, makes the logger (JSON on stdout), the
// registry, the health checks and the signer, starts tracing, and connects
// the store when cfg has one (the Kafka clients come from Producer,
// Consumer and Client). RCM_INTERNAL_SECRET is required; cfg's own
// Validate, if it has one, runs next. The caller defers Close.
func Start(ctx context.Context, name string, getenv func(string) string, stdout io.Writer, cfg Config) (*Service, error) {
	if err := Load(ctx, getenv, cfg); err != nil {
		return nil, err
	}
	b := cfg.base()
	s := &Service{
		Name:     name,
		Logger:   obs.NewLogger(stdout, name, b.LogLevel),
		Registry: obs.NewRegistry(),
		Health:   obs.NewHealth(),
		base:     b,
	}
	signer, err := principal.ForService(b.InternalSecret, s.Logger)
	if err != nil {
		return nil, err
	}
	s.Signer = signer
	if v, ok := cfg.(validator); ok {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	if k, ok := cfg.(withKafka); ok {
		s.kafka = k.kafka()
		if s.conn, err = kafkax.ConnFromEnv(getenv); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	s.stopTelemetry, err = obs.StartTracing(ctx, name, getenv)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	s.httpMetrics = httpx.NewHTTPMetrics(s.Registry, name)
	s.Health.Add("started", func(context.Context) error {
		if !s.started.Load() {
			return errors.New("starting")
		}
		return nil
	})
	if m, ok := cfg.(withMongo); ok {
		mc, disconnect, err := mongox.Dial(m.mongo().MongoURI, s.Registry)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.mongo, s.disconnect, s.db = mc, disconnect, m.mongo().Database
		s.Health.Add("mongodb", mongox.Ping(mc))
	}
	return s, nil
}

// DB is the service's database (RCM_MONGODB_DATABASE).
func (s *Service) DB() *mongo.Database { return s.mongo.Database(s.db) }

// Started reports whether the start-up steps are done and the background
// loops run: the readiness gate, also checked by /readyz.
func (s *Service) Started() bool { return s.started.Load() }

// Producer returns a client that produces with acknowledgement from every
// in-sync replica and no linger: each record waits for a store write
// already, not for company.
func (s *Service) Producer(clientID string, opts ...kgo.Opt) (*kgo.Client, error) {
	return s.Client(clientID, append([]kgo.Opt{kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0)}, opts...)...)
}

// Consumer returns a member of group reading topic that commits by hand
// (kafkax.GroupOpts, with RCM_KAFKA_INSTANCE_ID and
// RCM_KAFKA_SESSION_TIMEOUT), and measures the group's lag while Run runs.
func (s *Service) Consumer(clientID, group, topic string, opts ...kgo.Opt) (*kgo.Client, error) {
	if s.kafka == nil {
		return nil, errNoKafka
	}
	cl, err := s.Client(clientID, append(kafkax.GroupOpts(group, topic, s.kafka.InstanceID, s.kafka.SessionTimeout), opts...)...)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.lags = append(s.lags, kafkax.NewLagMonitor(cl, group, s.kafka.LagInterval, s.Registry, s.Logger))
	s.mu.Unlock()
	return cl, nil
}

var errNoKafka = errors.New("service: a Kafka client for a config without service.Kafka")

// Client returns a Kafka client with opts, flushed and closed by Run. The
// first one is the service's "kafka" readiness check.
func (s *Service) Client(clientID string, opts ...kgo.Opt) (*kgo.Client, error) {
	if s.kafka == nil {
		return nil, errNoKafka
	}
	cl, err := kafkax.NewClient(s.conn, clientID, s.Registry, s.Logger, opts...)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.clients) == 0 {
		s.Health.Add("kafka", func(ctx context.Context) error { return cl.Ping(ctx) })
	}
	s.clients = append(s.clients, cl)
	return cl, nil
}

// Router returns a router with the platform's middleware, then mw, a
// deadline of timeout on each request (0: none), and /healthz, /readyz and
// /metrics. Middleware in mw runs before routing, so it also sees requests
// no route matches (the gateway's CORS preflights).
func (s *Service) Router(timeout time.Duration, mw ...func(http.Handler) http.Handler) chi.Router {
	r := httpx.NewRouter(s.Logger, s.httpMetrics, timeout)
	r.Use(mw...)
	obs.Mount(r, s.Health, s.Registry)
	return r
}

// Internal returns a Router whose other routes are served to the gateway
// only: behind the principal it signs.
func (s *Service) Internal(timeout time.Duration, routes func(chi.Router)) chi.Router {
	r := s.Router(timeout)
	r.Group(s.signed(routes))
	return r
}

// Signed is Internal without the operational endpoints, for a second
// router of the same service (one without the deadline, say).
func (s *Service) Signed(timeout time.Duration, routes func(chi.Router)) chi.Router {
	r := httpx.NewRouter(s.Logger, s.httpMetrics, timeout)
	r.Group(s.signed(routes))
	return r
}

func (s *Service) signed(routes func(chi.Router)) func(chi.Router) {
	return func(r chi.Router) {
		r.Use(s.Signer.Require(s.Logger))
		routes(r)
	}
}

// Close flushes the producers, closes the Kafka clients, disconnects the
// store and flushes the traces, in that order; at most once. Run calls it
// after the background loops stopped; a main defers it for the paths that
// return before Run.
func (s *Service) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		clients := slices.Clone(s.clients)
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), s.base.DrainTimeout)
		defer cancel()
		for _, cl := range clients {
			if err := cl.Flush(ctx); err != nil {
				s.Logger.Warn("producer flush incomplete", slog.Any("err", err))
			}
		}
		for _, cl := range slices.Backward(clients) {
			cl.Close()
		}
		if s.disconnect != nil {
			s.disconnect()
		}
		if s.stopTelemetry != nil {
			tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.stopTelemetry(tctx); err != nil {
				s.Logger.Warn("trace flush incomplete", slog.Any("err", err))
			}
		}
	})
}
