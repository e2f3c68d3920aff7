package kafkax

import (
	"crypto/tls"
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Security reads how to reach a secured cluster from the environment:
// RCM_KAFKA_TLS=true dials TLS (system roots); RCM_KAFKA_SASL_MECHANISM
// (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) with RCM_KAFKA_SASL_USERNAME and
// RCM_KAFKA_SASL_PASSWORD authenticates. Unset, clients connect in plain
// text, as to the local stack's broker.
func Security(getenv func(string) string) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if v := getenv("RCM_KAFKA_TLS"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("RCM_KAFKA_TLS=%q: %w", v, err)
		}
		if on {
			opts = append(opts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
		}
	}
	user, pass := getenv("RCM_KAFKA_SASL_USERNAME"), getenv("RCM_KAFKA_SASL_PASSWORD")
	switch m := strings.ToUpper(getenv("RCM_KAFKA_SASL_MECHANISM")); m {
	case "":
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("RCM_KAFKA_SASL_MECHANISM=%q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", m)
	}
	return opts, nil
}
