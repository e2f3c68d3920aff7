package kafkax

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// requestCounts counts the requests a client wrote to its brokers, by
// request type (Produce, Fetch, OffsetCommit…): the round trips a piece
// of work costs, which kprom's byte, batch and record counts do not
// tell. A request that could not be written is not counted.
type requestCounts struct {
	total *prometheus.CounterVec
}

var _ kgo.HookBrokerWrite = requestCounts{}

func newRequestCounts(reg prometheus.Registerer) requestCounts {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rcm_kafka_requests_total",
		Help: "Requests written to the brokers, by request type.",
	}, []string{"request"})
	reg.MustRegister(total)
	return requestCounts{total: total}
}

func (c requestCounts) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil {
		c.total.WithLabelValues(kmsg.NameForKey(key)).Inc()
	}
}
