package auth

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// reason is why a request was not authenticated; the label value of
// rcm_auth_failures_total. The set is closed so the label stays bounded.
type reason string

const (
	reasonMissing      reason = "missing"       // no "Bearer <token>" header
	reasonMalformed    reason = "malformed"     // not a decodable JWT, no kid, oversized
	reasonExpired      reason = "expired"       // exp passed, beyond the leeway
	reasonNotYetValid  reason = "not_yet_valid" // nbf ahead, beyond the leeway
	reasonBadSignature reason = "bad_signature" // the key of its kid did not sign it
	reasonBadAlgorithm reason = "bad_algorithm" // alg other than RS256
	reasonUnknownKey   reason = "unknown_key"   // kid not in the JWKS, even after a refresh
	reasonWrongIssuer  reason = "wrong_issuer"  // iss is not the configured issuer
	reasonWrongParty   reason = "wrong_party"   // azp is not an authorized party
	reasonMissingClaim reason = "missing_claim" // exp, sub, or a configured iss/azp absent
	reasonBadTicket    reason = "bad_ticket"    // a stream ticket forged, expired, repeated or another user's than the token
)

var reasons = []reason{
	reasonMissing, reasonMalformed, reasonExpired, reasonNotYetValid, reasonBadSignature,
	reasonBadAlgorithm, reasonUnknownKey, reasonWrongIssuer, reasonWrongParty, reasonMissingClaim, reasonBadTicket,
}

type metrics struct {
	failures   *prometheus.CounterVec
	refreshOK  prometheus.Counter
	refreshErr prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	failures, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rcm_auth_failures_total",
		Help: "Requests refused as unauthenticated, by reason.",
	}, []string{"reason"}))
	if err != nil {
		return nil, err
	}
	refreshes, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rcm_auth_jwks_refreshes_total",
		Help: `HTTP fetches of the JWKS, by outcome ("ok": status 200, "error": any other status or a transport error).`,
	}, []string{"outcome"}))
	if err != nil {
		return nil, err
	}
	// Every series exists from the start, so a rate() over a fresh process
	// reads zero rather than nothing.
	for _, r := range reasons {
		failures.WithLabelValues(string(r))
	}
	return &metrics{
		failures:   failures,
		refreshOK:  refreshes.WithLabelValues("ok"),
		refreshErr: refreshes.WithLabelValues("error"),
	}, nil
}

func (m *metrics) fail(r reason) { m.failures.WithLabelValues(string(r)).Inc() }

// register registers c on reg, or returns the collector already registered
// under the same description, so two verifiers may share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register auth metrics: %w", err)
	}
	return c, nil
}
