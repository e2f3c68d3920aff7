package obs

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/rcm-platform/rcm/pkg/httpx"
)

// ServePprof serves Go's profiler on addr until ctx ends, when addr is not
// empty (RCM_PPROF_ADDR). It is a listener of its own, never the service's
// API: bind it to loopback or a private interface.
func ServePprof(ctx context.Context, addr string, logger *slog.Logger) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof listen %s: %w", addr, err)
	}
	logger.Info("pprof listening", slog.String("addr", ln.Addr().String()))
	// Profiles take as long as they are asked to: no write timeout here.
	return httpx.Serve(ctx, &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln, time.Second)
}
