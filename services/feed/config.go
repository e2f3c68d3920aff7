package main

import (
	"errors"
	"time"

	"github.com/rcm-platform/rcm/pkg/service"
)

// config is the feed's configuration; run sets the defaults that are
// constants of other packages before reading the environment.
type config struct {
	service.Base
	service.Kafka
	service.Mongo
	CreateIndexes bool          `env:"RCM_MONGODB_CREATE_INDEXES, default=true"`
	EventsTopic   string        `env:"RCM_EVENTS_TOPIC, overwrite"`
	DLQTopic      string        `env:"RCM_DLQ_TOPIC, overwrite"`
	ActivityTopic string        `env:"RCM_ACTIVITY_TOPIC, default=rcm.activity.v1"`
	Group         string        `env:"RCM_FEED_GROUP, default=rcm-feed"`
	Heartbeat     time.Duration `env:"RCM_SSE_HEARTBEAT, overwrite"`
	MaxStreams    int           `env:"RCM_FEED_MAX_STREAMS, overwrite"`
}

func (c *config) Validate() error {
	return errors.Join(
		service.Check(c.Partitions >= 1, "RCM_KAFKA_PARTITIONS=%d: want at least 1", c.Partitions),
		service.Check(c.MaxStreams >= 1, "RCM_FEED_MAX_STREAMS=%d: want at least 1", c.MaxStreams),
		service.Check(c.Heartbeat > 0, "RCM_SSE_HEARTBEAT=%s: want a positive duration", c.Heartbeat))
}
