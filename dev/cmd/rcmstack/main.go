// Command rcmstack runs the platform locally with nothing installed: the
// embedded Kafka broker and MongoDB server, the development JWKS endpoint,
// the compliance log's witness (rcmctl witness), the four services as
// separate processes, and the page for people (package devpage). A service that exits or is
// killed is restarted (100 ms backoff doubling to 5 s, reset after 30 s up)
// and the restart logged. Ctrl-C stops everything.
//
// Besides RCM_DATA_DIR and RCM_BIN_DIR, for a program that runs the stack
// beside others (the browser test): RCM_STACK_RANDOM_PORTS=1 puts every
// server on a free port, RCM_STACK_CORS_ORIGINS (comma-separated) are
// origins the gateway allows besides the page's, and RCM_STACK_READY_FILE
// is where the addresses are written as JSON once everything is ready.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rcmstack:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	logger := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dataDir := getenv("RCM_DATA_DIR")
	if dataDir == "" {
		dataDir = ".data"
	}
	binDir := getenv("RCM_BIN_DIR")
	if binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		binDir = filepath.Dir(exe)
	}
	logger.Info("starting the local stack", slog.String("data_dir", dataDir), slog.String("bin_dir", binDir))
	var origins []string
	for _, o := range strings.Split(getenv("RCM_STACK_CORS_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	s, err := stack.Start(ctx, stack.Config{DataDir: dataDir, BinDir: binDir, Logger: logger, Seed: true,
		RandomPorts: getenv("RCM_STACK_RANDOM_PORTS") == "1", CORSOrigins: origins})
	if err != nil {
		return err
	}
	if path := getenv("RCM_STACK_READY_FILE"); path != "" {
		if err := writeReady(path, s); err != nil {
			s.Close()
			return err
		}
	}
	fmt.Fprintf(stdout, `
RCM is ready.
  page        %s   (open it in a browser: sign in, live activity, campaigns, the log)
  gateway     %s
  campaign    %s   compliance %s   feed %s
  kafka       %s   mongodb %s
  JWKS        %s
  witness     %s   (key and state in %s)
  logs        %s

  TOKEN=$(bin/rcmctl token --sub %s)
  curl -s -X POST %s/v1/documents/doc_demo_behind/rcm \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"sms":true,"email":true,"call":false,"tone":"professional and empathetic","cadence":"day 1, day 5, day 14"}'

Ctrl-C stops everything.
`, s.URL(stack.Page), s.GatewayURL(), s.URL(stack.Campaign), s.URL(stack.Compliance), s.URL(stack.Feed),
		s.KafkaAddr(), s.MongoURI(), s.JWKS().JWKSURL(), s.URL(stack.Witness), filepath.Join(dataDir, stack.WitnessStateDir),
		filepath.Join(dataDir, "logs"),
		stack.DemoAccount, s.GatewayURL())

	<-ctx.Done()
	logger.Info("stopping")
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-time.After(60 * time.Second):
		return fmt.Errorf("stop timed out")
	}
	logger.Info("stopped")
	return nil
}

// writeReady writes the stack's addresses to path as JSON, through a
// temporary file renamed into place, so that a reader polling for the
// file never sees half of it.
func writeReady(path string, s *stack.Stack) error {
	b, err := json.Marshal(map[string]string{
		"page": s.URL(stack.Page), "gateway": s.GatewayURL(), "account": stack.DemoAccount,
		"dataDir": s.DataDir(), "logs": filepath.Join(s.DataDir(), "logs"),
	})
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
