package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/obs"
	"github.com/rcm-platform/rcm/pkg/witness"
)

// DefaultWitnessName names a witness key generated without --name.
const DefaultWitnessName = "rcm.local/witness"

// witnessCmd runs a C2SP tlog-witness for the compliance log (see package
// witness): POST /add-checkpoint, GET /<origin hash>/checkpoint,
// GET /verifier-key, and /healthz, /readyz, /metrics.
func witnessCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("witness", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", env(getenv, "RCM_HTTP_ADDR", "127.0.0.1:8084"), "address to serve on")
	stateDir := fs.String("state-dir", filepath.Join(env(getenv, "RCM_DATA_DIR", ".data"), "witness"),
		"directory of the witness's key and its per-origin state")
	name := fs.String("name", DefaultWitnessName, "the witness key's name, given to the key it generates on first start")
	logKey := fs.String("log-key", getenv("RCM_LOG_PUBLIC_KEY"),
		"the log's key: a note verifier key of any account, or the base64 Ed25519 public key, or a file holding either (required)")
	prefix := fs.String("origin-prefix", env(getenv, "RCM_LOG_ORIGIN", "rcm.local/compliance"),
		"the log's origin without the account: <prefix>/<accountId> are the origins it witnesses")
	printKey := fs.Bool("print-key", false, "print the witness's verifier key (generating the key if needed) and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// --name names a new key; a key already there keeps its name unless
	// --name asks for another.
	named := ""
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "name" {
			named = *name
		}
	})
	if _, err := os.Stat(filepath.Join(*stateDir, witness.KeyFile)); named == "" && errors.Is(err, os.ErrNotExist) {
		named = *name
	}
	key, err := witness.LoadOrCreateKey(*stateDir, named)
	if err != nil {
		return err
	}
	if *printKey {
		fmt.Fprintln(stdout, key.VerifierKey)
		return nil
	}
	if *logKey == "" {
		return errors.New("witness: --log-key is required")
	}
	pub, err := witness.ParseLogKey(readIfFile(*logKey))
	if err != nil {
		return fmt.Errorf("witness: --log-key: %w", err)
	}
	logger := obs.NewLogger(stderr, "witness", getenv("RCM_LOG_LEVEL"))
	reg := obs.NewRegistry()
	w, err := witness.New(witness.Config{
		StateDir: *stateDir, Signer: key.Signer, OriginPrefix: *prefix, LogKey: pub,
		Registerer: reg, Logger: logger,
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	health := obs.NewHealth()
	mux.HandleFunc("GET /healthz", health.Live)
	mux.HandleFunc("GET /readyz", health.Ready)
	mux.Handle("GET /metrics", obs.MetricsHandler(reg))
	mux.HandleFunc("GET /verifier-key", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(rw, key.VerifierKey+"\n")
	})
	mux.Handle("/", w.Handler())

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	logger.Info("witness serving", slog.String("addr", ln.Addr().String()), slog.String("verifier_key", key.VerifierKey),
		slog.String("origins", *prefix+"/*"), slog.String("state_dir", *stateDir))
	fmt.Fprintf(stdout, "witness on http://%s\nverifier key %s\n", ln.Addr(), key.VerifierKey)
	srv := httpx.NewServer(http.MaxBytesHandler(mux, witness.MaxBody))
	return httpx.Serve(ctx, srv, ln, 10*time.Second)
}

// readIfFile returns the trimmed content of the file s names, or s itself
// when it names none.
func readIfFile(s string) string {
	if raw, err := os.ReadFile(s); err == nil {
		return strings.TrimSpace(string(raw))
	}
	return s
}
