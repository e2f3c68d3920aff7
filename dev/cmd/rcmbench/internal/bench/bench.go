// Package bench runs the platform's benchmarks against the real binaries:
// it starts a stack of its own (embedded broker and store, the four
// services as processes, free ports, a temporary data dir), drives it like
// a client over HTTP and Kafka, measures the store directly with the
// MongoDB driver for the raw baselines, and returns the figures as a
// report.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/campaignseed"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Scenario names, in the order they run.
const (
	ScenarioStart      = "start"
	ScenarioClearance  = "clearance"
	ScenarioPipeline   = "pipeline"
	ScenarioCompliance = "compliance"
	ScenarioFanOut     = "fanout"
	ScenarioGrowth     = "growth"
)

// Scenarios lists every scenario in run order.
var Scenarios = []string{ScenarioStart, ScenarioClearance, ScenarioPipeline, ScenarioCompliance, ScenarioFanOut, ScenarioGrowth}

// Config is what to run and how hard.
type Config struct {
	BinDir    string
	Scenarios []string
	// Concurrency is the closed-loop workers of every start-campaign
	// measurement and of the raw single-insert baseline.
	Concurrency int
	// Accounts spreads the start-campaign load, so that no per-account
	// limit or lock is what is measured.
	Accounts int
	Warmup   time.Duration
	// Duration of each start-campaign path (gateway, direct) per round.
	Duration time.Duration
	// Rounds of the two start-campaign paths, alternating.
	Rounds int
	// RawDuration of the raw single-insert baseline.
	RawDuration time.Duration

	// ClearanceAccounts have one document each, the clearance and the
	// plain read spread over them; ClearanceDuration is each path's time
	// per round (Rounds rounds).
	ClearanceAccounts int
	ClearanceDuration time.Duration

	PipelineRate     float64
	PipelineDuration time.Duration
	PipelineAccounts int

	ComplianceEvents   int
	ComplianceAccounts int

	Subscribers        int
	SubscriberAccounts int
	// FanOutRate and FanOutBurst are the rates of the two rounds of
	// events published to the subscribers' accounts.
	FanOutRate  float64
	FanOutBurst float64

	GrowthCampaigns int
	GrowthEntries   int
	GrowthDuration  time.Duration
	// GrowthLargeEntries is the size of the one large account whose
	// proofs, checkpoints and verify the growth scenario times.
	GrowthLargeEntries int

	// PprofDir, when set, receives CPU profiles of the services (through
	// RCM_PPROF_ADDR) and of this process (the embedded store and broker
	// run in it) during the measured phases. Profiling this process slows
	// the store: take the figures from a run without it.
	PprofDir string
	// KeepData keeps the stacks' data dirs (logs included).
	KeepData bool
	Progress io.Writer
}

// DefaultConfig is a full run of about seven minutes on two cores.
func DefaultConfig() Config {
	return Config{
		Scenarios:          Scenarios,
		Concurrency:        32,
		Accounts:           500,
		Warmup:             3 * time.Second,
		Duration:           10 * time.Second,
		Rounds:             2,
		RawDuration:        10 * time.Second,
		ClearanceAccounts:  100,
		ClearanceDuration:  10 * time.Second,
		PipelineRate:       25,
		PipelineDuration:   30 * time.Second,
		PipelineAccounts:   50,
		ComplianceEvents:   20_000,
		ComplianceAccounts: 200,
		Subscribers:        10_000,
		SubscriberAccounts: 1_000,
		FanOutRate:         100,
		FanOutBurst:        500,
		GrowthCampaigns:    100_000,
		GrowthEntries:      100_000,
		GrowthDuration:     15 * time.Second,
		GrowthLargeEntries: 100_000,
		Progress:           os.Stderr,
	}
}

func (c Config) runs(name string) bool { return slices.Contains(c.Scenarios, name) }

// Validate checks the settings that would make a run meaningless.
func (c Config) Validate() error {
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(Scenarios, ", "))
		}
	}
	switch {
	case c.Rounds < 1:
		return fmt.Errorf("rounds %d: want at least 1", c.Rounds)
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency %d: want at least 1", c.Concurrency)
	case c.Accounts < 1 || c.ClearanceAccounts < 1 || c.PipelineAccounts < 1 || c.ComplianceAccounts < 1 || c.SubscriberAccounts < 1:
		return fmt.Errorf("every account count must be at least 1")
	case c.Duration <= 0 || c.RawDuration <= 0 || c.ClearanceDuration <= 0 || c.PipelineDuration <= 0 || c.GrowthDuration <= 0:
		return fmt.Errorf("every duration must be positive")
	case c.PipelineRate <= 0 || c.FanOutRate <= 0 || c.FanOutBurst <= 0:
		return fmt.Errorf("every rate must be positive")
	case c.Subscribers < c.SubscriberAccounts:
		return fmt.Errorf("%d subscribers over %d accounts: want at least one per account", c.Subscribers, c.SubscriberAccounts)
	case c.ComplianceEvents < c.ComplianceAccounts:
		return fmt.Errorf("%d events over %d accounts: want at least one per account", c.ComplianceEvents, c.ComplianceAccounts)
	case c.GrowthLargeEntries < growthMidEntries:
		return fmt.Errorf("growth's large account needs at least %d entries", growthMidEntries)
	case c.GrowthEntries < growthProbeEntries || c.GrowthCampaigns < 0:
		return fmt.Errorf("growth needs at least %d entries", growthProbeEntries)
	}
	return nil
}

// Run runs the selected scenarios and returns their figures. A scenario
// that fails ends the run with an error, and the report holds what was
// measured before it. Each group of scenarios gets a stack of its own, so
// that the work one leaves behind does not slow the next.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	rep := &Report{Started: time.Now(), Config: cfg}
	defer func() { rep.Finished = time.Now() }()
	add := func(name string, sec *Section, err error) error {
		if sec != nil {
			rep.Sections = append(rep.Sections, sec)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	if cfg.runs(ScenarioStart) {
		sec, err := startCampaign(ctx, cfg)
		if err := add(ScenarioStart, sec, err); err != nil {
			return rep, err
		}
	}
	if cfg.runs(ScenarioClearance) {
		err := withEnv(ctx, cfg, "clearance", func(e *env) error {
			e.logf("== %s", ScenarioClearance)
			sec, err := clearance(ctx, e)
			return add(ScenarioClearance, sec, err)
		})
		if err != nil {
			return rep, err
		}
	}
	shared := []struct {
		name string
		run  func(context.Context, *env) (*Section, error)
	}{
		{ScenarioPipeline, pipeline},
		{ScenarioCompliance, complianceAppend},
		{ScenarioFanOut, fanOut},
	}
	if cfg.runs(ScenarioPipeline) || cfg.runs(ScenarioCompliance) || cfg.runs(ScenarioFanOut) {
		err := withEnv(ctx, cfg, "main", func(e *env) error {
			for _, s := range shared {
				if !cfg.runs(s.name) {
					continue
				}
				e.logf("== %s", s.name)
				sec, err := s.run(ctx, e)
				if err := add(s.name, sec, err); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return rep, err
		}
	}
	if cfg.runs(ScenarioGrowth) {
		err := withEnv(ctx, cfg, "growth", func(e *env) error {
			e.logf("== %s", ScenarioGrowth)
			sec, err := growth(ctx, e)
			if err := add(ScenarioGrowth, sec, err); err != nil {
				return err
			}
			sec, err = growthLog(ctx, e)
			return add(ScenarioGrowth, sec, err)
		})
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// env is one running stack and the clients that drive it.
type env struct {
	cfg    Config
	name   string
	stk    *stack.Stack
	http   *http.Client
	mongo  *mongo.Client
	kafka  *kgo.Client
	signer *principal.Signer
	ids    *ids.Generator
	pprof  map[string]string // service -> pprof address
	logger *slog.Logger

	// started counts the events the campaign service's relay must
	// publish on this stack: one per campaign started through the API,
	// and those of the other commands a scenario sent.
	started int
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.cfg.Progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// withEnv starts a stack, runs fn with it, and stops it.
func withEnv(ctx context.Context, cfg Config, name string, fn func(*env) error) (err error) {
	dir, err := os.MkdirTemp("", "rcmbench-"+name+"-")
	if err != nil {
		return err
	}
	defer func() {
		if cfg.KeepData || err != nil {
			fmt.Fprintf(cfg.Progress, "data and service logs kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	e := &env{cfg: cfg, name: name, ids: ids.NewGenerator(time.Now), logger: slog.New(slog.DiscardHandler)}
	sc := stack.Config{
		DataDir: dir, BinDir: cfg.BinDir, RandomPorts: true,
		Env: map[string]string{
			// The gateway's per-account limit is a guard against one
			// tenant, not what is measured here.
			"RCM_RATE_LIMIT":  "1000000",
			"RCM_RATE_WINDOW": "1m",
			// The fan-out measures streams past the feed's production cap.
			"RCM_FEED_MAX_STREAMS": "1000000",
		},
	}
	if cfg.PprofDir != "" {
		if err := os.MkdirAll(cfg.PprofDir, 0o755); err != nil {
			return err
		}
		e.pprof = map[string]string{}
		sc.ServiceEnv = map[string]map[string]string{}
		for _, s := range stack.Services {
			addr, err := freeAddr()
			if err != nil {
				return err
			}
			e.pprof[s] = addr
			sc.ServiceEnv[s] = map[string]string{"RCM_PPROF_ADDR": addr}
		}
	}
	e.logf("starting the %s stack", name)
	stk, err := stack.Start(ctx, sc)
	if err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	e.stk = stk
	e.http = newHTTPClient(cfg.Concurrency * 2)
	defer e.http.CloseIdleConnections()
	defer e.stop()
	if e.signer, err = principal.NewSigner(principal.DevSecret, time.Now); err != nil {
		return err
	}
	if e.mongo, err = mongo.Connect(options.Client().ApplyURI(stk.MongoURI()).SetMaxPoolSize(uint64(cfg.Concurrency * 4))); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.mongo.Disconnect(dctx)
	}()
	e.kafka, err = kafkax.NewClient(kafkax.Conn{Brokers: []string{stk.KafkaAddr()}}, "rcmbench", prometheus.NewRegistry(), e.logger,
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		return err
	}
	defer e.kafka.Close()
	return fn(e)
}

// stop stops the stack. A campaign service that published events on this
// stack drains its relay's outbox clean-up before it exits, which a large
// backlog makes slow; the data is thrown away, so it is killed instead.
// A service that does not stop cleanly is reported, not fatal: the
// figures were taken.
func (e *env) stop() {
	if e.started > 0 {
		e.logf("stopping the %s stack (the campaign service killed, not waiting for its outbox clean-up)", e.name)
		_ = e.stk.Process(stack.Campaign).Kill()
	} else {
		e.logf("stopping the %s stack", e.name)
	}
	if err := e.stk.Close(); err != nil {
		e.logf("  %v", err)
	}
}

// token mints a session token whose account is the user account.
func (e *env) token(account string) (string, error) {
	return e.stk.Token(sessiontoken.Claims{Subject: account, SessionID: "sess_bench"})
}

// tokens mints one token per account.
func (e *env) tokens(accounts []string) (map[string]string, error) {
	out := make(map[string]string, len(accounts))
	for _, a := range accounts {
		t, err := e.token(a)
		if err != nil {
			return nil, err
		}
		out[a] = t
	}
	return out, nil
}

// holdBehind writes one BEHIND document per account into the campaign
// service's records, as its read model applied them an hour ago
// (campaignseed): the documents campaigns start on have mostly been held
// for a while. A record younger than a minute makes a command claim its
// principal's nonce in the nonce store as well (see
// services/campaign/internal/store.Nonce), which would be most of the
// starts if the documents were published just before the load.
func (e *env) holdBehind(ctx context.Context, accounts []string, doc func(account string) string) error {
	coll := e.mongo.Database(campaignseed.Database).Collection(campaignseed.DocumentsCollection)
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	for chunk := range slices.Chunk(accounts, 500) {
		recs := make([]any, 0, len(chunk))
		for _, a := range chunk {
			recs = append(recs, campaignseed.Record(campaignseed.Document{ID: doc(a), AccountID: a, LoanStatus: "BEHIND", Version: 1, UpdatedAt: at}))
		}
		if _, err := coll.InsertMany(ctx, recs); err != nil {
			return fmt.Errorf("hold the BEHIND documents: %w", err)
		}
	}
	return nil
}

// names returns n names prefix0000, prefix0001…
func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	return out
}
