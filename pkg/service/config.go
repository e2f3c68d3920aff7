package service

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"
)

// Base is the configuration every service reads: where it serves, the
// secret it shares with the gateway, how long shutdown waits, the profiler
// and the log level. Tracing is configured by the standard OpenTelemetry
// variables (OTEL_EXPORTER_OTLP_ENDPOINT, …), read by obs.StartTracing.
//
// A field tagged overwrite takes its default from the value the service
// sets before Start: the defaults that differ from service to service.
type Base struct {
	HTTPAddr       string        `env:"RCM_HTTP_ADDR, overwrite"`
	InternalSecret string        `env:"RCM_INTERNAL_SECRET"` // no default: principal.ForService refuses to start without it
	DrainTimeout   time.Duration `env:"RCM_DRAIN_TIMEOUT, default=10s"`
	PprofAddr      string        `env:"RCM_PPROF_ADDR"`
	LogLevel       string        `env:"RCM_LOG_LEVEL, default=info"`
}

// Kafka is the configuration of a service with Kafka clients. The cluster
// itself (RCM_KAFKA_BROKERS and the TLS and SASL variables) is read by
// kafkax.ConnFromEnv, which rcmctl shares.
type Kafka struct {
	CreateTopics   bool          `env:"RCM_KAFKA_CREATE_TOPICS, default=true"`
	Partitions     int           `env:"RCM_KAFKA_PARTITIONS, default=6"`
	LagInterval    time.Duration `env:"RCM_KAFKA_LAG_INTERVAL, default=10s"`
	InstanceID     string        `env:"RCM_KAFKA_INSTANCE_ID"`
	SessionTimeout time.Duration `env:"RCM_KAFKA_SESSION_TIMEOUT, default=10s"`
}

// Mongo is the configuration of a service with a store.
type Mongo struct {
	MongoURI string `env:"RCM_MONGODB_URI, default=mongodb://127.0.0.1:27017/"`
	Database string `env:"RCM_MONGODB_DATABASE, overwrite"`
}

func (b *Base) base() *Base    { return b }
func (k *Kafka) kafka() *Kafka { return k }
func (m *Mongo) mongo() *Mongo { return m }

// Config is a service's configuration struct: one that embeds Base, and
// Kafka and Mongo when the service has them.
type Config interface{ base() *Base }

type withKafka interface{ kafka() *Kafka }
type withMongo interface{ mongo() *Mongo }

// validator is a Config with rules of its own, checked once the secret is.
type validator interface{ Validate() error }

// Load fills cfg from getenv, as Start does. An empty variable counts as unset, as it
// always has: RCM_X= leaves the default.
func Load(ctx context.Context, getenv func(string) string, cfg Config) error {
	// Fields are read one by one, each decoded right after its lookup: a
	// value that does not decode is the last one looked up.
	var last string
	err := envconfig.ProcessWith(ctx, &envconfig.Config{
		Target: cfg,
		Lookuper: envconfig.LookuperFunc(func(key string) (string, bool) {
			v := getenv(key)
			last = fmt.Sprintf("%s=%q", key, v)
			return v, v != ""
		}),
	})
	if err != nil {
		return fmt.Errorf("config: %s: %w", last, err)
	}
	return nil
}

// List is a comma-separated list whose items are trimmed and whose empty
// items are dropped: "a, b,," is [a b].
type List []string

// EnvDecode implements envconfig.Decoder.
func (l *List) EnvDecode(v string) error {
	*l = nil
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// Check returns nil when ok holds, else the error format describes: one
// rule of a Validate.
func Check(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, args...)
}
