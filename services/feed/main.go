// Command feed is the feed service: it turns rcm.campaign-events.v1 into a
// stored activity history per account and streams it live over SSE. This
// first version only starts, serves its health and metrics endpoints, and
// stops cleanly.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rcm-platform/rcm/pkg/envconfig"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/obs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		slog.Error("feed stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	r := envconfig.New(getenv)
	addr := r.String("RCM_HTTP_ADDR", "127.0.0.1:8083")
	logger := obs.NewLogger(stdout, "feed", r.String("RCM_LOG_LEVEL", "info"))
	if err := r.Err(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	reg := obs.NewRegistry()
	router := httpx.NewRouter(logger, httpx.NewHTTPMetrics(reg, "feed"), 15*time.Second)
	obs.Mount(router, obs.NewHealth(), reg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	logger.Info("feed listening", slog.String("addr", ln.Addr().String()))
	err = httpx.Serve(ctx, httpx.NewServer(router), ln, 10*time.Second)
	logger.Info("feed stopped")
	return err
}
