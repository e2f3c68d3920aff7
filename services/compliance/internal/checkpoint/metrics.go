package checkpoint

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the checkpoints' metrics; the API observes its proofs on
// Proofs too.
type Metrics struct {
	signed              prometheus.Counter
	published           prometheus.Counter
	publishFailures     prometheus.Counter
	cosignatures        prometheus.Counter
	rejections          *prometheus.CounterVec
	consistencyFailures prometheus.Counter
	// Proofs is the time to build a proof from the stored tree, by kind
	// (inclusion, consistency).
	Proofs *prometheus.HistogramVec
}

// NewMetrics returns the metrics, registered on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		signed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_log_checkpoints_signed_total", Help: "Checkpoints signed and stored.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_log_checkpoints_published_total", Help: "Checkpoints published to the checkpoints topic.",
		}),
		publishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_log_checkpoint_publish_failures_total", Help: "Attempts to publish a checkpoint to the checkpoints topic that failed; each is retried until one succeeds.",
		}),
		cosignatures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_log_cosignatures_total", Help: "Witness cosignatures collected and verified.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rcm_log_witness_rejections_total", Help: "Checkpoints a witness did not cosign (refused, unreachable, or answered without its valid cosignature), by witness; the log line says why.",
		}, []string{"witness"}),
		consistencyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_log_consistency_failures_total", Help: "Trees not signed because they were not consistent with the last stored checkpoint.",
		}),
		Proofs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rcm_log_proof_duration_seconds", Help: "Time to build a proof from the stored tree, by kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"kind"}),
	}
	reg.MustRegister(m.signed, m.published, m.publishFailures, m.cosignatures, m.rejections, m.consistencyFailures, m.Proofs)
	m.Proofs.WithLabelValues("inclusion")
	m.Proofs.WithLabelValues("consistency")
	return m
}
