// Command gateway is the platform's only public surface: it authenticates
// the Clerk session token, validates bodies against the contract, and
// forwards commands and reads with the verified principal to the internal
// services. It holds no state.
package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/service"
	"github.com/rcm-platform/rcm/services/gateway/internal/api"
	"github.com/rcm-platform/rcm/services/gateway/internal/auth"
	"github.com/rcm-platform/rcm/services/gateway/internal/browser"
	"github.com/rcm-platform/rcm/services/gateway/internal/upstream"
)

func main() { service.Main("gateway", run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg := config{Base: service.Base{HTTPAddr: "127.0.0.1:8080"}}
	svc, err := service.Start(ctx, "gateway", getenv, stdout, &cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	verifier, err := auth.NewVerifier(ctx, auth.Config{
		JWKSURL: cfg.JWKSURL, Issuer: cfg.Issuer, AuthorizedParties: cfg.AuthorizedParties,
	}, svc.Registry, svc.Logger)
	if err != nil {
		return err
	}
	svc.Health.Add("jwks", verifier.Ready)
	campaignSvc, err1 := upstream.New(cfg.CampaignURL, svc.Signer, nil)
	complianceSvc, err2 := upstream.New(cfg.ComplianceURL, svc.Signer, upstream.NewClient(60*time.Second))
	feedSvc, err3 := upstream.New(cfg.FeedURL, svc.Signer, nil)
	streamSvc, err4 := upstream.New(cfg.FeedURL, svc.Signer, upstream.NewClient(0))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}

	tickets, err := auth.NewTickets(cfg.InternalSecret, time.Now)
	if err != nil {
		return err
	}

	router := svc.Router(0, browser.CORS(cfg.corsOrigins()))
	mount(router, verifier.Middleware(svc.Logger), verifier.TicketMiddleware(svc.Logger, tickets),
		api.RateLimit(cfg.RateLimit, cfg.RateWindow, svc.Logger),
		&api.Handler{Campaign: campaignSvc, Compliance: complianceSvc, Feed: feedSvc, Stream: streamSvc,
			Streams: api.NewStreamLimit(cfg.StreamsPerAccount), Tickets: tickets, Logger: svc.Logger})
	return svc.Run(ctx, service.Parts{Handler: router})
}

// mount puts the public routes on r, each behind authentication (authn;
// streamAuthn, which also takes a stream ticket, for the stream) and then
// the account's rate limit (limit, one budget for both). The tests walk
// what it mounts, so that a new route cannot miss their checks.
func mount(r chi.Router, authn, streamAuthn, limit func(http.Handler) http.Handler, h *api.Handler) {
	r.Group(func(r chi.Router) {
		r.Use(authn, limit)
		h.Routes(r)
	})
	r.Group(func(r chi.Router) {
		r.Use(streamAuthn, limit)
		h.StreamRoutes(r)
	})
}
