// Command compliance is the compliance service: it turns
// rcm.campaign-events.v1 into an insert-only, hash-chained, verifiable log
// per account, and serves that log and its verification to the gateway.
package main

import (
	"context"
	"io"
	"time"

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/service"
	"github.com/rcm-platform/rcm/services/compliance/internal/api"
	"github.com/rcm-platform/rcm/services/compliance/internal/consumer"
	"github.com/rcm-platform/rcm/services/compliance/internal/ledger"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() { service.Main("compliance", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg := config{
		Base:        service.Base{HTTPAddr: "127.0.0.1:8082"},
		Mongo:       service.Mongo{Database: "rcm_compliance"},
		EventsTopic: events.Topic,
		DLQTopic:    events.DLQTopic,
	}
	svc, err := service.Start(ctx, "compliance", getenv, stdout, &cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	led := ledger.New(svc.DB(), time.Now)

	// A partition that moves to another instance takes its accounts with
	// it: forget their heads, so that they are read afresh if it comes back.
	forget := func(context.Context, *kgo.Client, map[string][]int32) { led.Forget() }
	client, err := svc.Consumer("rcm-compliance", cfg.Group, cfg.EventsTopic,
		kgo.OnPartitionsRevoked(forget), kgo.OnPartitionsLost(forget))
	if err != nil {
		return err
	}
	cons := consumer.New(led, kafkax.DeadLetter(client, cfg.DLQTopic), svc.Registry, svc.Logger, time.Now)

	return svc.Run(ctx, service.Parts{
		Handler: svc.Internal(30*time.Second, (&api.Handler{Ledger: led, Logger: svc.Logger}).Routes),
		Prepare: []service.Step{
			service.Indexes(cfg.CreateIndexes, led.EnsureIndexes),
			svc.Topics([]string{cfg.EventsTopic}, cfg.DLQTopic),
		},
		Background: []service.Loop{svc.Consume(client, cfg.MaxBatch, cons.Handle)},
	})
}
