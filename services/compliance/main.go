// Command compliance is the compliance service: it turns
// rcm.campaign-events.v1 into an insert-only, hash-chained, verifiable log
// per account, and serves that log and its verification to the gateway.
package main

import (
	"context"
	"io"
	"time"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/service"
	"github.com/rcm-platform/rcm/services/compliance/internal/api"
	"github.com/rcm-platform/rcm/services/compliance/internal/checkpoint"
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

		CheckpointsTopic: checkpoint.Topic,
	}
	svc, err := service.Start(ctx, "compliance", getenv, stdout, &cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	key, err := checkpoint.LoadKey(cfg.SigningKey, cfg.Origin)
	if err != nil {
		return err
	}
	witnesses, err := checkpoint.ParseWitnesses(cfg.Witnesses)
	if err != nil {
		return err
	}
	led := ledger.New(ledger.Config{DB: svc.DB(), Now: time.Now})
	var witnessIDs []string
	for _, w := range witnesses {
		witnessIDs = append(witnessIDs, w.ID())
	}
	checkpoints := checkpoint.NewStore(svc.DB(), witnessIDs, time.Now)
	producer, err := svc.Producer("rcm-compliance-checkpoints")
	if err != nil {
		return err
	}
	metrics := checkpoint.NewMetrics(svc.Registry)
	signer := checkpoint.NewLoop(checkpoint.LoopConfig{
		Key: key, Tree: led, Store: checkpoints, Witnesses: witnesses,
		Publish:  checkpoint.Publisher(producer, cfg.CheckpointsTopic),
		Accounts: checkpoint.Accounts(svc.DB().Collection(auditlog.HeadsCollection)),
		Metrics:  metrics, Logger: svc.Logger,
	})

	// A partition that moves to another instance takes its accounts with
	// it: forget their heads, so that they are read afresh if it comes back.
	forget := func(context.Context, *kgo.Client, map[string][]int32) { led.Forget() }
	client, err := svc.Consumer("rcm-compliance", cfg.Group, cfg.EventsTopic,
		kgo.OnPartitionsRevoked(forget), kgo.OnPartitionsLost(forget))
	if err != nil {
		return err
	}
	cons := consumer.New(consumer.Config{Ledger: led, DeadLetter: kafkax.DeadLetter(client, cfg.DLQTopic), Now: time.Now, Logger: svc.Logger, Appended: func(account string) { signer.Notify(account) }}, svc.Registry)

	return svc.Run(ctx, service.Parts{
		Handler: svc.Internal(30*time.Second, (&api.Handler{
			Ledger: led, Logger: svc.Logger,
			Log: api.Log{Key: key, Checkpoints: checkpoints, Tree: led, Metrics: metrics},
		}).Routes),
		Prepare: []service.Step{
			service.Indexes(cfg.CreateIndexes, led.EnsureIndexes),
			service.Indexes(cfg.CreateIndexes, checkpoints.EnsureIndexes),
			svc.Topics([]string{cfg.EventsTopic, cfg.CheckpointsTopic}, cfg.DLQTopic),
		},
		Background: []service.Loop{
			// Partitions hold different accounts: their records decode
			// and validate on every core at once while the fetch before
			// is written, and those ready together are appended in one
			// write (consumer.Stages).
			func(ctx context.Context) error {
				return kafkax.ConsumeStaged(ctx, client, cfg.MaxBatch, cons.Stages(), svc.Logger, kafkax.PartitionsAtOnce(cfg.Partitions))
			},
			signer.Run,
		},
	})
}
