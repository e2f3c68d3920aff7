// Package stack runs the whole platform locally: the embedded Kafka broker
// and MongoDB server, the development JWKS endpoint, and the four services
// as separate processes built from this repository. `make run` uses it
// through cmd/rcmstack; the end-to-end tests use it to run the real
// binaries, kill them and bring them back.
//
// The services are supervised (see Process): one that exits or is killed
// from outside is started again with a backoff, and each restart is logged.
// What a fault test needs:
//   - Stack.Kill(name, sig) crashes a service and leaves the supervisor to
//     restart it; Process.WaitReady waits until it is back, Process.Pid is
//     its current pid (0 while down) and Process.Restarts counts restarts.
//   - Process.Kill and Process.Stop take a service down until
//     Process.Start; Stack.StopKafka/StartKafka and StopMongo/StartMongo do
//     the same for the broker and the store, on the same address and data.
package stack

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/dev/devjwks"
	"github.com/rcm-platform/rcm/dev/devpage"
	"github.com/rcm-platform/rcm/dev/embedded"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Names of the services, in start order; they stop in reverse.
const (
	Campaign   = "campaign"
	Compliance = "compliance"
	Feed       = "feed"
	Gateway    = "gateway"
)

// Services lists the services in start order.
var Services = []string{Campaign, Compliance, Feed, Gateway}

// Witness is the compliance log's witness, `rcmctl witness`, started
// before the services (it is not one of Services).
const Witness = "witness"

// Page is the page for people (package devpage), served in the stack's
// own process once the gateway is up; the gateway lists its origin in
// RCM_CORS_ORIGINS.
const Page = "page"

// LogSigningKeyPath is where the development key that signs the
// compliance log's checkpoints lives under the data dir (the base64
// Ed25519 seed, RCM_LOG_SIGNING_KEY); WitnessStateDir is the witness's
// key and state.
const (
	LogSigningKeyPath = "compliance/log-signing-key"
	WitnessStateDir   = "witness"
)

// Topics of the platform.
const (
	DocumentsTopic = "documents.v1"
	DocumentsGroup = "rcm-campaign"
)

// DevKeyPath is where the development signing key lives under the data
// dir; rcmctl token reads it from there.
const DevKeyPath = "clerk/dev-signing-key.pem"

// Config says where everything runs. Zero values are the local stack's
// fixed addresses; "random" picks free ports (tests).
type Config struct {
	DataDir string
	BinDir  string
	// RandomPorts puts every server on a free port instead of the fixed
	// local ones (9092, 27017, 8090, 8080-8083).
	RandomPorts bool
	// MongoAddr is where the embedded MongoDB server listens; "" is its
	// fixed address (or a free port with RandomPorts). A test that puts
	// something between the services and the store sets it, and points
	// RCM_MONGODB_URI in Env elsewhere.
	MongoAddr string
	// Env is added to every service's environment.
	Env map[string]string
	// ServiceEnv is added to one service's environment (by service name),
	// after Env: a setting that must differ between services, such as a
	// listen address.
	ServiceEnv map[string]map[string]string
	// Logs receives the services' output; nil writes one file per service
	// under DataDir/logs.
	Logs io.Writer
	// Logger receives the launcher's own messages; nil discards them.
	Logger *slog.Logger
	// Seed publishes the demo documents once the campaign service is up.
	Seed bool
	// Partitions of the event, documents and consent topics (default 6).
	Partitions int32
	// Restart is the backoff of the services' supervisor.
	Restart Restart
	// CORSOrigins are origins the gateway allows besides the page's (a
	// test's own page on another port, a front-end under development).
	CORSOrigins []string
}

// Stack is a running local platform.
type Stack struct {
	cfg    Config
	logger *slog.Logger

	mu    sync.Mutex
	kafka *embedded.Kafka
	mongo *embedded.Mongo
	jwks  *devjwks.Server
	page  *devpage.Server
	procs map[string]*Process
	addrs map[string]string
	// wired is each service's environment that the stack derives (the
	// log's keys, the witness), before Config.Env and ServiceEnv.
	wired  map[string]map[string]string
	kport  int
	mongoA string
}

// Start starts everything and returns once the gateway is ready (and the
// demo documents applied, with Seed).
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = ".data"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 6
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dir
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Stack{cfg: cfg, logger: logger, procs: map[string]*Process{}, addrs: map[string]string{}}
	if err := s.start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Stack) start(ctx context.Context) error {
	fixed := map[string]string{
		Gateway: "127.0.0.1:8080", Campaign: "127.0.0.1:8081", Compliance: "127.0.0.1:8082", Feed: "127.0.0.1:8083",
		Witness: "127.0.0.1:8084", Page: "127.0.0.1:8085", "jwks": "127.0.0.1:8090", "mongo": "127.0.0.1:27017",
	}
	s.kport = 9092
	if s.cfg.RandomPorts {
		s.kport = 0
		for k := range fixed {
			addr, err := freeAddr()
			if err != nil {
				return err
			}
			fixed[k] = addr
		}
	}
	if s.cfg.MongoAddr != "" {
		fixed["mongo"] = s.cfg.MongoAddr
	}
	s.addrs = fixed
	s.mongoA = fixed["mongo"]

	if err := s.StartKafka(ctx); err != nil {
		return err
	}
	if err := s.StartMongo(ctx); err != nil {
		return err
	}
	jwks, err := devjwks.Start(ctx, devjwks.Config{Addr: fixed["jwks"], KeyPath: filepath.Join(s.cfg.DataDir, DevKeyPath)})
	if err != nil {
		return fmt.Errorf("start dev JWKS: %w", err)
	}
	s.jwks = jwks
	s.logger.Info("dev JWKS ready", slog.String("url", jwks.JWKSURL()))

	if err := s.startWitness(ctx); err != nil {
		return err
	}
	for _, name := range Services {
		p, err := s.newProcess(name)
		if err != nil {
			return err
		}
		s.procs[name] = p
		if err := p.Start(ctx); err != nil {
			return err
		}
		s.logger.Info("service ready", slog.String("service", name), slog.String("addr", s.addrs[name]))
	}
	var docs []string
	for _, d := range DemoDocuments() {
		docs = append(docs, d.ID)
	}
	page, err := devpage.Start(devpage.Config{Addr: s.addrs[Page], GatewayURL: s.GatewayURL(), Mint: s.Token,
		Account: DemoAccount, Documents: docs})
	if err != nil {
		return err
	}
	s.page = page
	s.logger.Info("page ready", slog.String("url", page.URL()))
	if s.cfg.Seed {
		if err := s.seed(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *Stack) env(name string) []string {
	env := map[string]string{
		"RCM_HTTP_ADDR":        s.addrs[name],
		"RCM_KAFKA_BROKERS":    s.KafkaAddr(),
		"RCM_MONGODB_URI":      s.MongoURI(),
		"RCM_CLERK_JWKS_URL":   s.jwks.JWKSURL(),
		"RCM_CLERK_ISSUER":     s.jwks.Issuer(),
		"RCM_INTERNAL_SECRET":  principal.DevSecret,
		"RCM_CAMPAIGN_URL":     "http://" + s.addrs[Campaign],
		"RCM_COMPLIANCE_URL":   "http://" + s.addrs[Compliance],
		"RCM_FEED_URL":         "http://" + s.addrs[Feed],
		"RCM_KAFKA_PARTITIONS": fmt.Sprint(s.cfg.Partitions),
		// One process per service: a static group member, so that a
		// restarted (or killed and restarted) service takes its
		// partitions back at once.
		"RCM_KAFKA_INSTANCE_ID": name,
	}
	if name == Gateway {
		env["RCM_CORS_ORIGINS"] = strings.Join(append([]string{s.URL(Page)}, s.cfg.CORSOrigins...), ",")
	}
	for k, v := range s.wired[name] {
		env[k] = v
	}
	for k, v := range s.cfg.Env {
		env[k] = v
	}
	for k, v := range s.cfg.ServiceEnv[name] {
		env[k] = v
	}
	out := os.Environ()
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// StartKafka starts (or restarts, on the same port and data) the broker.
// Compacted topics keep the latest value per key.
func (s *Stack) StartKafka(ctx context.Context) error {
	compact := "compact"
	logger, err := s.serverLogger("kafka")
	if err != nil {
		return err
	}
	k, err := embedded.StartKafka(ctx, embedded.KafkaConfig{
		Port:    s.kport,
		DataDir: filepath.Join(s.cfg.DataDir, "kafka"),
		Topics: []kafkax.Topic{
			{Name: events.Topic, Partitions: s.cfg.Partitions},
			{Name: events.DLQTopic, Partitions: 1},
			{Name: DocumentsTopic, Partitions: s.cfg.Partitions, Configs: map[string]*string{"cleanup.policy": &compact}},
			{Name: "rcm." + DocumentsTopic + ".dlq", Partitions: 1},
			{Name: events.ConsentTopic, Partitions: s.cfg.Partitions, Configs: map[string]*string{"cleanup.policy": &compact}},
		},
		Logger: logger,
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.kafka = k
	if s.kport == 0 {
		_, port, _ := net.SplitHostPort(k.Addr())
		fmt.Sscan(port, &s.kport)
	}
	s.mu.Unlock()
	s.logger.Info("kafka ready", slog.String("addr", k.Addr()))
	return nil
}

// StopKafka stops the broker, as an outage would.
func (s *Stack) StopKafka() {
	s.mu.Lock()
	k := s.kafka
	s.kafka = nil
	s.mu.Unlock()
	if k != nil {
		k.Close()
	}
}

// StartMongo starts (or restarts) the MongoDB server on its address and data.
func (s *Stack) StartMongo(ctx context.Context) error {
	logger, err := s.serverLogger("mongodb")
	if err != nil {
		return err
	}
	m, err := embedded.StartMongo(ctx, embedded.MongoConfig{Addr: s.mongoA, DataDir: filepath.Join(s.cfg.DataDir, "mongo"), Logger: logger})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.mongo = m
	s.mongoA = m.Addr()
	s.mu.Unlock()
	s.logger.Info("mongodb ready", slog.String("uri", m.URI()))
	return nil
}

// serverLogger returns the logger of an embedded server: errors only, to
// the logs, not the console (FerretDB warns of every command it lacks,
// such as the driver's endSessions).
func (s *Stack) serverLogger(name string) (*slog.Logger, error) {
	errorsOnly := &slog.HandlerOptions{Level: slog.LevelError}
	if s.cfg.Logs != nil {
		return slog.New(slog.NewJSONHandler(s.cfg.Logs, errorsOnly)).With(slog.String("server", name)), nil
	}
	dir := filepath.Join(s.cfg.DataDir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The file stays open for the life of the process, like its server.
	return slog.New(slog.NewJSONHandler(f, errorsOnly)), nil
}

// StopMongo stops the MongoDB server, as an outage would.
func (s *Stack) StopMongo() {
	s.mu.Lock()
	m := s.mongo
	s.mongo = nil
	s.mu.Unlock()
	if m != nil {
		m.Close()
	}
}

// KafkaAddr is the broker's address.
func (s *Stack) KafkaAddr() string { return fmt.Sprintf("127.0.0.1:%d", s.kport) }

// MongoURI is the MongoDB connection string.
func (s *Stack) MongoURI() string { return "mongodb://" + s.mongoA + "/" }

// URL is the base URL of a service.
func (s *Stack) URL(service string) string { return "http://" + s.addrs[service] }

// GatewayURL is the public API's base URL.
func (s *Stack) GatewayURL() string { return s.URL(Gateway) }

// Process returns a service's process (nil for an unknown name).
func (s *Stack) Process(service string) *Process { return s.procs[service] }

// Kill sends sig to a service's process as a crash or an operator would,
// leaving it supervised: the supervisor starts it again after its backoff
// (Process.WaitReady waits for that, Process.Restarts counts it). For
// SIGKILL it returns once the process is gone. It returns the pid it
// signalled. Process.Kill, by contrast, stops the service until Start.
func (s *Stack) Kill(service string, sig syscall.Signal) (int, error) {
	p := s.procs[service]
	if p == nil {
		return 0, fmt.Errorf("no service %q", service)
	}
	return p.Signal(sig)
}

// Token mints a session token the gateway accepts.
func (s *Stack) Token(c sessiontoken.Claims) (string, error) {
	if c.TTL == 0 {
		c.TTL = time.Hour
	}
	return s.jwks.Mint(c)
}

// JWKS is the development JWKS server.
func (s *Stack) JWKS() *devjwks.Server { return s.jwks }

// Close stops the services in reverse start order, then the JWKS endpoint,
// the MongoDB server and the broker.
func (s *Stack) Close() error {
	// No restart once shutting down, whichever service exits first.
	for _, p := range s.procs {
		p.unsupervise()
	}
	var errs []error
	for i := len(Services) - 1; i >= 0; i-- {
		if p := s.procs[Services[i]]; p != nil {
			if err := p.Stop(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if p := s.procs[Witness]; p != nil {
		if err := p.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.page != nil {
		s.page.Close()
	}
	if s.jwks != nil {
		s.jwks.Close()
	}
	s.StopMongo()
	s.StopKafka()
	return errors.Join(errs...)
}

// Document is a documents.v1 value.
type Document struct {
	ID        string    `json:"id"`
	AccountID string    `json:"accountId"`
	Loan      *Loan     `json:"loan"`
	Version   int64     `json:"version"`
	Borrower  *Borrower `json:"borrower,omitempty"`
}

// Loan is a document's loan.
type Loan struct {
	Status string `json:"status"`
}

// Borrower is a document's borrower: an IANA time zone and a two-letter
// state, each optional.
type Borrower struct {
	TimeZone string `json:"timeZone,omitempty"`
	State    string `json:"state,omitempty"`
}

// PutDocuments publishes documents and returns once the campaign service
// has applied them. A nil Loan publishes a document without a loan.
func (s *Stack) PutDocuments(ctx context.Context, docs ...Document) error {
	records := make([]*kgo.Record, 0, len(docs))
	for _, d := range docs {
		v, err := json.Marshal(d)
		if err != nil {
			return err
		}
		records = append(records, &kgo.Record{Topic: DocumentsTopic, Key: []byte(d.ID), Value: v})
	}
	return s.publish(ctx, records...)
}

// DeleteDocument publishes a tombstone and returns once it was applied.
func (s *Stack) DeleteDocument(ctx context.Context, id string) error {
	return s.publish(ctx, &kgo.Record{Topic: DocumentsTopic, Key: []byte(id)})
}

func (s *Stack) publish(ctx context.Context, records ...*kgo.Record) error {
	cl, err := kafkax.NewClient(kafkax.Conn{Brokers: []string{s.KafkaAddr()}}, "rcmstack", prometheus.NewRegistry(), s.logger)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return kafkax.ProduceAwaitGroup(ctx, cl, DocumentsGroup, records...)
}

// DemoAccount owns the demo documents.
const DemoAccount = "user_demo"

// DemoDocuments are the documents seeded for DemoAccount. Each borrower
// has a time zone, so contact hours are the borrower's; doc_demo_ma's
// borrower lives in Massachusetts, whose stricter rule pack applies.
func DemoDocuments() []Document {
	return []Document{
		{ID: "doc_demo_behind", AccountID: DemoAccount, Loan: &Loan{Status: "BEHIND"}, Version: 1,
			Borrower: &Borrower{TimeZone: "America/Chicago", State: "TX"}},
		{ID: "doc_demo_current", AccountID: DemoAccount, Loan: &Loan{Status: "CURRENT"}, Version: 1,
			Borrower: &Borrower{TimeZone: "America/Denver", State: "CO"}},
		{ID: "doc_demo_noloan", AccountID: DemoAccount, Version: 1,
			Borrower: &Borrower{TimeZone: "America/Los_Angeles", State: "CA"}},
		{ID: "doc_demo_ma", AccountID: DemoAccount, Loan: &Loan{Status: "BEHIND"}, Version: 1,
			Borrower: &Borrower{TimeZone: "America/New_York", State: "MA"}},
	}
}

func (s *Stack) seed(ctx context.Context) error {
	err := s.PutDocuments(ctx, DemoDocuments()...)
	if err != nil {
		return fmt.Errorf("seed demo documents: %w", err)
	}
	s.logger.Info("demo documents seeded", slog.String("account", DemoAccount))
	return nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// restartPolicy is the supervisor's backoff, read at each exit.
func (s *Stack) restartPolicy() Restart {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Restart.withDefaults()
}

// errExited says the process exited before it was ready.
var errExited = errors.New("the process exited before it was ready")

// waitReady polls url until it answers 200, the process exits, or ctx ends.
func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, ctx.Err())
		case <-exited:
			return fmt.Errorf("%s: %w", url, errExited)
		case <-tick.C:
		}
	}
}

// startWitness creates the log's development signing key when there is
// none, starts `rcmctl witness` with the log's public key, and gives the
// compliance service the key (RCM_LOG_SIGNING_KEY) and the witness
// (RCM_LOG_WITNESSES, <url>|<witness verifier key>).
func (s *Stack) startWitness(ctx context.Context) error {
	keyPath := filepath.Join(s.cfg.DataDir, LogSigningKeyPath)
	pub, err := loadOrCreateLogKey(keyPath)
	if err != nil {
		return fmt.Errorf("log signing key: %w", err)
	}
	stateDir := filepath.Join(s.cfg.DataDir, WitnessStateDir)
	s.wired = map[string]map[string]string{
		Witness:    {"RCM_LOG_PUBLIC_KEY": base64.StdEncoding.EncodeToString(pub)},
		Compliance: {"RCM_LOG_SIGNING_KEY": keyPath},
	}
	p, err := s.newCommand(Witness, "rcmctl", "witness", "--state-dir", stateDir)
	if err != nil {
		return err
	}
	s.procs[Witness] = p
	if err := p.Start(ctx); err != nil {
		return err
	}
	vkey, err := os.ReadFile(filepath.Join(stateDir, "witness.vkey"))
	if err != nil {
		return fmt.Errorf("witness verifier key: %w", err)
	}
	s.wired[Compliance]["RCM_LOG_WITNESSES"] = s.URL(Witness) + "|" + strings.TrimSpace(string(vkey))
	s.logger.Info("witness ready", slog.String("addr", s.addrs[Witness]), slog.String("verifier_key", strings.TrimSpace(string(vkey))))
	return nil
}

// loadOrCreateLogKey reads the base64 Ed25519 seed at path, or writes a
// new one there (mode 0600), and returns its public key.
func loadOrCreateLogKey(path string) (ed25519.PublicKey, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		raw = []byte(base64.StdEncoding.EncodeToString(seed) + "\n")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s holds no base64 32-byte seed", path)
	}
	return ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey), nil
}

// DataDir is the stack's absolute data directory.
func (s *Stack) DataDir() string { return s.cfg.DataDir }
