package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/obs"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
)

// Parts are what a service runs.
type Parts struct {
	// Handler serves the service's HTTP API on RCM_HTTP_ADDR.
	Handler http.Handler
	// OnShutdown runs when the server stops accepting: what long-lived
	// responses (streams) need to end, since draining waits for them.
	OnShutdown func()
	// Prepare runs in order before the service is ready, each step
	// retried with backoff until it succeeds (stores and brokers that
	// are not up yet) or the service stops.
	Prepare []Step
	// Background loops start once Prepare is done and run until the HTTP
	// server has drained. A loop that returns an error stops the service.
	Background []Loop
}

// Step is one start-up step.
type Step struct {
	Name string
	Do   func(context.Context) error
}

// Loop is a background loop: it runs until ctx ends.
type Loop func(ctx context.Context) error

// Run serves until ctx ends or a part fails, then shuts down in this
// order, the same in every service:
//
//  1. stop accepting requests, end streams (OnShutdown), and drain the
//     in-flight requests for up to RCM_DRAIN_TIMEOUT;
//  2. stop the background loops and wait for them: a consume loop
//     commits the offsets of what it handled as it returns, and the
//     campaign relay produces what it holds;
//  3. flush every producer, then close the Kafka clients;
//  4. close the store;
//  5. flush the traces.
//
// Requests in flight may still hand work to the loops, and the loops may
// still write to the store and produce, so each goes before what it uses.
func (s *Service) Run(ctx context.Context, p Parts) error {
	defer s.Close()
	ln, err := net.Listen("tcp", s.base.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.base.HTTPAddr, err)
	}
	s.Logger.Info(s.Name+" listening", slog.String("addr", ln.Addr().String()))
	srv := httpx.NewServer(p.Handler)
	if p.OnShutdown != nil {
		srv.RegisterOnShutdown(p.OnShutdown)
	}

	// The loops outlive ctx: they stop once the server has drained.
	loopsCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return obs.ServePprof(gctx, s.base.PprofAddr, s.Logger) })
	g.Go(func() error {
		defer stopLoops()
		return httpx.Serve(gctx, srv, ln, s.base.DrainTimeout)
	})
	g.Go(func() error { return s.background(loopsCtx, p) })
	err = g.Wait()
	s.Close()
	s.Logger.Info(s.Name + " stopped")
	return err
}

// background prepares, opens the readiness gate, and runs the loops.
func (s *Service) background(ctx context.Context, p Parts) error {
	for _, step := range p.Prepare {
		if err := retry(ctx, s.Logger, step); err != nil || ctx.Err() != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, loop := range p.Background {
		g.Go(func() error { return loop(gctx) })
	}
	s.mu.Lock()
	for _, lag := range s.lags {
		g.Go(func() error { lag.Run(gctx); return nil })
	}
	s.mu.Unlock()
	s.started.Store(true)
	s.Logger.Info(s.Name + " ready")
	return g.Wait()
}

// Consume is the loop that hands cl's records to handle, at most
// maxRecords a poll (kafkax.ConsumeLoop).
func (s *Service) Consume(cl *kgo.Client, maxRecords int, handle kafkax.BatchHandler) Loop {
	return func(ctx context.Context) error { return kafkax.ConsumeLoop(ctx, cl, maxRecords, handle, s.Logger) }
}

// Topics is the start-up step that creates the service's topics that do
// not exist yet, unless RCM_KAFKA_CREATE_TOPICS is false: partitioned ones
// with RCM_KAFKA_PARTITIONS partitions, the dead-letter topic with one,
// and compacted ones (cleanup.policy=compact: the latest value per key is
// kept, whatever its age) with RCM_KAFKA_PARTITIONS partitions. A topic
// that exists is left as it is.
func (s *Service) Topics(partitioned []string, deadLetter string, compacted ...string) Step {
	return Step{Name: "topics", Do: func(ctx context.Context) error {
		if !s.kafka.CreateTopics {
			return nil
		}
		topics := []kafkax.Topic{{Name: deadLetter, Partitions: 1}}
		for _, name := range partitioned {
			topics = append(topics, kafkax.Topic{Name: name, Partitions: int32(s.kafka.Partitions)})
		}
		compact := "compact"
		for _, name := range compacted {
			topics = append(topics, kafkax.Topic{Name: name, Partitions: int32(s.kafka.Partitions),
				Configs: map[string]*string{"cleanup.policy": &compact}})
		}
		s.mu.Lock()
		cl := s.clients[0]
		s.mu.Unlock()
		return kafkax.EnsureTopics(ctx, cl, topics...)
	}}
}

// Tick is a loop that calls fn every interval.
func Tick(every time.Duration, fn func(context.Context)) Loop {
	return func(ctx context.Context) error {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				fn(ctx)
			}
		}
	}
}

// Indexes is the start-up step that creates the store's indexes, unless
// create is false (RCM_MONGODB_CREATE_INDEXES: production may create them
// with a role of its own).
func Indexes(create bool, ensure func(context.Context) error) Step {
	return Step{Name: "indexes", Do: func(ctx context.Context) error {
		if !create {
			return nil
		}
		return ensure(ctx)
	}}
}

// Main is a service's main: it calls run until SIGINT or SIGTERM, and
// exits 1 with the error logged when run returns one.
func Main(name string, run func(ctx context.Context, getenv func(string) string, stdout io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		slog.Error(name+" stopped", "err", err)
		stop()
		os.Exit(1)
	}
}
