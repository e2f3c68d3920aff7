// Command gateway is the platform's only public surface: it authenticates
// the Clerk session token, validates bodies against the contract, and
// forwards commands and reads with the verified principal to the internal
// services. It holds no state.
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
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rcm-platform/rcm/pkg/envconfig"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/obs"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/services/gateway/internal/api"
	"github.com/rcm-platform/rcm/services/gateway/internal/auth"
	"github.com/rcm-platform/rcm/services/gateway/internal/upstream"
	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		slog.Error("gateway stopped", "err", err)
		os.Exit(1)
	}
}

type config struct {
	HTTPAddr          string
	JWKSURL           string
	Issuer            string
	AuthorizedParties []string
	InternalSecret    string
	CampaignURL       string
	ComplianceURL     string
	FeedURL           string
	DrainTimeout      time.Duration
	RateLimit         int
	RateWindow        time.Duration
	StreamsPerAccount int
	PprofAddr         string
	LogLevel          string
}

func loadConfig(getenv func(string) string) (config, error) {
	r := envconfig.New(getenv)
	c := config{
		HTTPAddr:          r.String("RCM_HTTP_ADDR", "127.0.0.1:8080"),
		JWKSURL:           r.String("RCM_CLERK_JWKS_URL", "http://127.0.0.1:8090/.well-known/jwks.json"),
		Issuer:            r.String("RCM_CLERK_ISSUER", ""),
		InternalSecret:    r.String("RCM_INTERNAL_SECRET", ""),
		CampaignURL:       r.String("RCM_CAMPAIGN_URL", "http://127.0.0.1:8081"),
		ComplianceURL:     r.String("RCM_COMPLIANCE_URL", "http://127.0.0.1:8082"),
		FeedURL:           r.String("RCM_FEED_URL", "http://127.0.0.1:8083"),
		DrainTimeout:      r.Duration("RCM_DRAIN_TIMEOUT", 10*time.Second),
		RateLimit:         r.Int("RCM_RATE_LIMIT", 1200),
		RateWindow:        r.Duration("RCM_RATE_WINDOW", time.Minute),
		StreamsPerAccount: r.Int("RCM_SSE_MAX_PER_ACCOUNT", 10),
		PprofAddr:         r.String("RCM_PPROF_ADDR", ""),
		LogLevel:          r.String("RCM_LOG_LEVEL", "info"),
	}
	for _, p := range strings.Split(r.String("RCM_CLERK_AUTHORIZED_PARTIES", ""), ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.AuthorizedParties = append(c.AuthorizedParties, p)
		}
	}
	return c, r.Err()
}

// checkConfig refuses a production gateway without authorized parties:
// it would accept a token minted for any front-end of the Clerk instance,
// and a warning in a log is too easy to miss for that. The local stack,
// recognised by its development secret, mints tokens without azp.
func checkConfig(c config) error {
	if len(c.AuthorizedParties) == 0 && c.InternalSecret != principal.DevSecret {
		return errors.New("RCM_CLERK_AUTHORIZED_PARTIES is not set: outside the local stack the gateway checks every token's azp against your front-ends' origins (comma-separated)")
	}
	return nil
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	logger := obs.NewLogger(stdout, "gateway", cfg.LogLevel)
	stopTracing, err := obs.StartTracing(ctx, "gateway", getenv)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stopTracing(sctx)
	}()
	signer, err := principal.ForService(cfg.InternalSecret, logger)
	if err != nil {
		return err
	}
	if err := checkConfig(cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	reg := obs.NewRegistry()
	health := obs.NewHealth()

	verifier, err := auth.NewVerifier(ctx, auth.Config{
		JWKSURL:           cfg.JWKSURL,
		Issuer:            cfg.Issuer,
		AuthorizedParties: cfg.AuthorizedParties,
	}, reg, logger)
	if err != nil {
		return err
	}
	health.Add("jwks", verifier.Ready)
	campaignSvc, err := upstream.New(cfg.CampaignURL, signer, nil)
	if err != nil {
		return err
	}
	complianceSvc, err := upstream.New(cfg.ComplianceURL, signer, upstream.NewClient(60*time.Second))
	if err != nil {
		return err
	}
	feedSvc, err := upstream.New(cfg.FeedURL, signer, nil)
	if err != nil {
		return err
	}
	streamSvc, err := upstream.New(cfg.FeedURL, signer, upstream.NewClient(0))
	if err != nil {
		return err
	}

	router := httpx.NewRouter(logger, httpx.NewHTTPMetrics(reg, "gateway"), 0)
	obs.Mount(router, health, reg)
	router.Group(func(r chi.Router) {
		r.Use(verifier.Middleware(logger), api.RateLimit(cfg.RateLimit, cfg.RateWindow, logger))
		(&api.Handler{Campaign: campaignSvc, Compliance: complianceSvc, Feed: feedSvc, Stream: streamSvc,
			Streams: api.NewStreamLimit(cfg.StreamsPerAccount), Logger: logger}).Routes(r)
	})

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	logger.Info("gateway listening", slog.String("addr", ln.Addr().String()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return obs.ServePprof(gctx, cfg.PprofAddr, logger) })
	g.Go(func() error { return httpx.Serve(gctx, httpx.NewServer(router), ln, cfg.DrainTimeout) })
	err = g.Wait()
	logger.Info("gateway stopped")
	return err
}
