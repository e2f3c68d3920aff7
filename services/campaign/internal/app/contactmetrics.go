package app

import (
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/events"
)

// ReasonNone is the reason label of an allowed contact.
const ReasonNone = "none"

// ContactMetrics counts contact decisions:
// rcm_contact_decisions_total{channel,decision,reason}. Every series a
// decision can produce exists from the start at 0, so that a rate (the
// alert on blocked-for-opt-out decisions) sees the first one, and no other
// label value can ever be created.
type ContactMetrics struct {
	decisions *prometheus.CounterVec
}

// NewContactMetrics registers the counter on reg.
func NewContactMetrics(reg prometheus.Registerer) *ContactMetrics {
	m := &ContactMetrics{decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rcm_contact_decisions_total",
		Help: "Outbound contact attempts cleared and recorded, by channel, decision (allowed, blocked) and reason (the rule that blocked it; none when allowed). Dry-run clearances and inbound contacts are not counted.",
	}, []string{"channel", "decision", "reason"})}
	reg.MustRegister(m.decisions)
	for _, ch := range contract.Channels() {
		m.decisions.WithLabelValues(ch, events.DecisionAllowed, ReasonNone)
		for _, r := range events.ContactReasons() {
			m.decisions.WithLabelValues(ch, events.DecisionBlocked, r)
		}
	}
	return m
}

// Observe counts one recorded decision: an allowed attempt with reason
// ReasonNone (or ""), a blocked one with the rule that blocked it. A
// combination outside those is counted nowhere and returned as an error
// for the caller to log.
func (m *ContactMetrics) Observe(channel, decision, reason string) error {
	if decision == events.DecisionAllowed && reason == "" {
		reason = ReasonNone
	}
	known := slices.Contains(contract.Channels(), channel) &&
		(decision == events.DecisionAllowed && reason == ReasonNone ||
			decision == events.DecisionBlocked && slices.Contains(events.ContactReasons(), reason))
	if !known {
		return fmt.Errorf("contact decision %q/%q/%q is not one the metric counts", channel, decision, reason)
	}
	m.decisions.WithLabelValues(channel, decision, reason).Inc()
	return nil
}
