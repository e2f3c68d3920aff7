// Command rcmbench runs the platform's benchmarks (`make bench`): it starts
// a stack of its own from the built binaries, measures start-campaign
// through the gateway against the campaign service and the raw store,
// the contact clearance beside a plain read of the document, the
// pipeline's latency, the compliance log's append rate, SSE fan-out
// to many subscribers and how the store holds up as it grows, then prints
// the figures as markdown and writes them to BENCHMARKS.md.
//
//	bin/rcmbench                          # every scenario, about seven minutes
//	bin/rcmbench -scenarios start,growth  # some of them
//	bin/rcmbench -pprof .data/pprof       # CPU profiles of the measured phases
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "rcmbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, out, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if err := raiseOpenFiles(); err != nil {
		fmt.Fprintln(stderr, "rcmbench: could not raise the open files limit:", err)
	}
	rep, runErr := bench.Run(ctx, cfg)
	if rep == nil {
		return runErr
	}
	md := rep.Markdown(command(args), bench.ThisMachine())
	fmt.Fprint(stdout, md)
	if runErr != nil {
		// A partial report is printed, never written over the last full one.
		return runErr
	}
	if out != "" {
		if err := os.WriteFile(out, []byte(md), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "rcmbench: wrote", out)
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (bench.Config, string, error) {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("rcmbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenarios := fs.String("scenarios", strings.Join(bench.Scenarios, ","), "scenarios to run, comma-separated: "+strings.Join(bench.Scenarios, ", "))
	out := fs.String("out", "BENCHMARKS.md", "file the markdown report is written to (empty: print only)")
	fs.StringVar(&cfg.BinDir, "bin", "", "directory of the service binaries (default: the directory of this executable)")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "closed-loop workers of the start-campaign and raw insert measurements")
	fs.IntVar(&cfg.Accounts, "accounts", cfg.Accounts, "accounts the start-campaign load is spread over")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unrecorded warm-up before each closed-loop measurement")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "start-campaign measurement time, per path and round")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds of the start-campaign paths (gateway and direct alternate, each on a fresh stack)")
	fs.DurationVar(&cfg.RawDuration, "raw-duration", cfg.RawDuration, "raw single-insert measurement time")
	fs.IntVar(&cfg.ClearanceAccounts, "clearance-accounts", cfg.ClearanceAccounts, "accounts (one document each) of the clearance measurement")
	fs.DurationVar(&cfg.ClearanceDuration, "clearance-duration", cfg.ClearanceDuration, "clearance and plain read measurement time, per path and round")
	fs.Float64Var(&cfg.PipelineRate, "pipeline-rate", cfg.PipelineRate, "steady start-campaign rate of the pipeline latency measurement, per second")
	fs.DurationVar(&cfg.PipelineDuration, "pipeline-duration", cfg.PipelineDuration, "pipeline latency measurement time")
	fs.IntVar(&cfg.PipelineAccounts, "pipeline-accounts", cfg.PipelineAccounts, "accounts (and SSE streams) of the pipeline measurement")
	fs.IntVar(&cfg.ComplianceEvents, "compliance-events", cfg.ComplianceEvents, "events produced for the compliance append measurement")
	fs.IntVar(&cfg.ComplianceAccounts, "compliance-accounts", cfg.ComplianceAccounts, "accounts those events are spread over")
	fs.IntVar(&cfg.Subscribers, "subscribers", cfg.Subscribers, "SSE subscribers of the fan-out measurement, on one feed instance")
	fs.IntVar(&cfg.SubscriberAccounts, "subscriber-accounts", cfg.SubscriberAccounts, "accounts those subscribers are spread over")
	fs.Float64Var(&cfg.FanOutRate, "fanout-rate", cfg.FanOutRate, "events per second published to the subscribers' accounts, first round")
	fs.Float64Var(&cfg.FanOutBurst, "fanout-burst", cfg.FanOutBurst, "events per second of the second round")
	fs.IntVar(&cfg.GrowthCampaigns, "growth-campaigns", cfg.GrowthCampaigns, "campaigns seeded for the growth measurement")
	fs.IntVar(&cfg.GrowthEntries, "growth-entries", cfg.GrowthEntries, "compliance log entries seeded for the growth measurement")
	fs.IntVar(&cfg.GrowthLargeEntries, "growth-large-entries", cfg.GrowthLargeEntries, "log entries of the one large account whose proofs, checkpoints and verify the growth scenario times")
	fs.DurationVar(&cfg.GrowthDuration, "growth-duration", cfg.GrowthDuration, "start-campaign measurement time of the growth scenario, per store size")
	fs.StringVar(&cfg.PprofDir, "pprof", "", "directory to write CPU profiles of the measured phases to (slows the store: take figures without it)")
	fs.BoolVar(&cfg.KeepData, "keep", false, "keep the stacks' data dirs and service logs")
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.Scenarios = nil
	for _, s := range strings.Split(*scenarios, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Scenarios = append(cfg.Scenarios, s)
		}
	}
	if cfg.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return cfg, "", fmt.Errorf("find the binaries: %w (use -bin)", err)
		}
		cfg.BinDir = filepath.Dir(exe)
	}
	return cfg, *out, cfg.Validate()
}

// command is how the report names the run: the binary as make bench calls
// it and the flags given, paths under the working directory made relative.
func command(args []string) string {
	wd, _ := os.Getwd()
	parts := []string{"bin/rcmbench"}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok && filepath.IsAbs(v) {
			a = k + "=" + relative(wd, v)
		} else if filepath.IsAbs(a) {
			a = relative(wd, a)
		} else if a == "" {
			a = `""`
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func relative(wd, path string) string {
	if rel, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return filepath.Base(path)
}

// raiseOpenFiles lifts the soft open-files limit to the hard one: 10,000
// SSE subscribers hold 10,000 sockets here and as many in the feed, which
// inherits this process's limit.
func raiseOpenFiles() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= lim.Max {
		return nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return errors.Join(errors.New("setrlimit"), err)
	}
	return nil
}
