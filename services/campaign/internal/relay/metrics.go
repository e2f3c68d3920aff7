package relay

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	published *prometheus.CounterVec
	latency   prometheus.Histogram
	overflow  prometheus.Counter
	swept     prometheus.Counter
	consent   *prometheus.CounterVec
	takenOut  prometheus.Counter
	removed   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, r *Relay) *metrics {
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rcm_outbox_publish_total", Help: "Outbox events produced to Kafka, by outcome (ok, error).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rcm_outbox_publish_duration_seconds", Help: "Time from handing an event to the relay until the broker acknowledged it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		overflow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_outbox_queue_overflows_total", Help: "Events left for the sweep because the relay queue was full.",
		}),
		consent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rcm_consent_publish_total", Help: "Consent states produced to the consent topic after an event that changed them, by outcome (ok, error).",
		}, []string{"outcome"}),
		takenOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_outbox_taken_out_events_total", Help: "Published events a command's write of their record took out of its outbox.",
		}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_outbox_removed_events_total", Help: "Published events the relay removed from outboxes no command wrote within its wait.",
		}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_outbox_swept_events_total", Help: "Events the periodic sweep found in the store and queued for publishing.",
		}),
	}
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rcm_outbox_pending_events", Help: "Events in the store's outboxes waiting to be published at the last sweep.",
	}, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(r.pending)
	})
	oldest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rcm_outbox_oldest_event_age_seconds", Help: "Age of the oldest event in the outboxes waiting to be published at the last sweep; 0 when none.",
	}, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.oldest.IsZero() {
			return 0
		}
		return r.now().Sub(r.oldest).Seconds()
	})
	reg.MustRegister(m.published, m.latency, m.overflow, m.swept, m.consent, m.takenOut, m.removed, pending, oldest)
	for _, outcome := range []string{"ok", "error"} {
		m.published.WithLabelValues(outcome)
		m.consent.WithLabelValues(outcome)
	}
	return m
}
