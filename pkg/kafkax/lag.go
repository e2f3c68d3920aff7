package kafkax

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LagMonitor publishes a consumer group's lag, per topic and partition, as
// the gauge rcm_kafka_consumer_lag: how many records the group has not
// yet committed past. It asks the broker on an interval rather than on
// every scrape, so a scrape never waits on Kafka.
type LagMonitor struct {
	adm    *kadm.Client
	group  string
	every  time.Duration
	lag    *prometheus.GaugeVec
	logger *slog.Logger
}

// NewLagMonitor returns a monitor of group through cl, registered on reg.
func NewLagMonitor(cl *kgo.Client, group string, every time.Duration, reg prometheus.Registerer, logger *slog.Logger) *LagMonitor {
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "rcm_kafka_consumer_lag",
		Help: "Records of a partition the consumer group has not committed past, as of the last check.",
	}, []string{"group", "topic", "partition"})
	reg.MustRegister(lag)
	if every <= 0 {
		every = 10 * time.Second
	}
	return &LagMonitor{adm: kadm.NewClient(cl), group: group, every: every, lag: lag, logger: logger}
}

// Run updates the gauge until ctx ends.
func (m *LagMonitor) Run(ctx context.Context) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		m.update(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *LagMonitor) update(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.every)
	defer cancel()
	lags, err := m.adm.Lag(ctx, m.group)
	if err != nil {
		if ctx.Err() == nil {
			m.logger.Debug("consumer lag unavailable", slog.String("group", m.group), slog.Any("err", err))
		}
		return
	}
	l, ok := lags[m.group]
	if !ok || l.Error() != nil {
		return
	}
	for topic, parts := range l.Lag {
		for p, ml := range parts {
			if ml.Err != nil || ml.Lag < 0 {
				continue
			}
			m.lag.WithLabelValues(m.group, topic, strconv.Itoa(int(p))).Set(float64(ml.Lag))
		}
	}
}
