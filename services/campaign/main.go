// Command campaign is the campaign service: it owns campaigns and the
// documents read model, writes every command with its event in one
// single-document write, and relays the events to Kafka.
package main

import (
	"context"
	"io"
	"log/slog"
	"time"
	_ "time/tzdata" // contact hours never depend on the host's zone database

	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/service"
	"github.com/rcm-platform/rcm/services/campaign/internal/api"
	"github.com/rcm-platform/rcm/services/campaign/internal/app"
	"github.com/rcm-platform/rcm/services/campaign/internal/documents"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
	"github.com/rcm-platform/rcm/services/campaign/internal/relay"
	"github.com/rcm-platform/rcm/services/campaign/internal/store"
)

func main() { service.Main("campaign", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg := config{Base: service.Base{HTTPAddr: "127.0.0.1:8081"}, Mongo: service.Mongo{Database: "rcm_campaign"}, EventsTopic: events.Topic}
	svc, err := service.Start(ctx, "campaign", getenv, stdout, &cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	st := store.New(svc.DB())
	idem := idempotency.New(svc.DB(), time.Now)
	guard := st.Nonces()
	svc.Signer.GuardWrites(guard)
	svc.Signer.ClaimInCommand(api.ClaimsNonceInCommand)

	producer, err := svc.Producer("rcm-campaign-relay")
	if err != nil {
		return err
	}
	consumer, err := svc.Consumer("rcm-campaign-documents", cfg.DocumentsGroup, cfg.DocumentsTopic)
	if err != nil {
		return err
	}
	gen := ids.NewGenerator(time.Now)
	rl := relay.New(relay.Config{Topic: cfg.EventsTopic, ConsentTopic: cfg.ConsentTopic, SweepInterval: cfg.SweepInterval, SweepMinAge: cfg.SweepMinAge,
		RemoveAfter: cfg.RemoveAfter}, producer, st, svc.Registry, svc.Logger, time.Now)
	st.TakeOutPublished(rl)
	campaigns := app.New(app.Config{Store: st, Relay: rl, Claims: idem, NewID: gen.New, Now: time.Now, Logger: svc.Logger, Registerer: svc.Registry})
	docs := documents.NewConsumer(documents.ConsumerConfig{Documents: campaigns, DeadLetter: kafkax.DeadLetter(producer, cfg.documentsDLQ()), Logger: svc.Logger}, svc.Registry)
	// Commands wait for the readiness gate: what a previous process left
	// in the outbox is queued first.
	h := &api.Handler{Campaigns: campaigns, Logger: svc.Logger, Ready: svc.Started, Nonces: guard}

	return svc.Run(ctx, service.Parts{
		Handler: svc.Internal(15*time.Second, h.Routes),
		Prepare: []service.Step{
			{Name: "store", Do: st.EnsureIndexes},
			svc.Topics([]string{cfg.EventsTopic}, cfg.documentsDLQ(), cfg.DocumentsTopic, cfg.ConsentTopic),
			{Name: "outbox", Do: func(ctx context.Context) error { return rl.Sweep(ctx, 0) }},
		},
		Background: []service.Loop{
			func(ctx context.Context) error { return rl.Run(ctx, cfg.DrainTimeout) },
			svc.Consume(consumer, 1000, docs.Handle),
			service.Tick(time.Hour, func(ctx context.Context) { sweepIdempotency(ctx, idem, svc.Logger) }),
		},
	})
}

// sweepIdempotency deletes expired Idempotency-Key claims.
func sweepIdempotency(ctx context.Context, idem *idempotency.Store, logger *slog.Logger) {
	if n, err := idem.Sweep(ctx); err != nil {
		logger.Warn("idempotency sweep failed", slog.Any("err", err))
	} else if n > 0 {
		logger.Info("expired idempotency keys deleted", slog.Int64("count", n))
	}
}
