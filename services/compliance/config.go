package main

import "github.com/rcm-platform/rcm/pkg/service"

// config is the compliance service's configuration; run sets the defaults
// that are constants of other packages before reading the environment.
type config struct {
	service.Base
	service.Kafka
	service.Mongo
	CreateIndexes bool   `env:"RCM_MONGODB_CREATE_INDEXES, default=true"`
	EventsTopic   string `env:"RCM_EVENTS_TOPIC, overwrite"`
	DLQTopic      string `env:"RCM_DLQ_TOPIC, overwrite"`
	Group         string `env:"RCM_COMPLIANCE_GROUP, default=rcm-compliance"`
	MaxBatch      int    `env:"RCM_COMPLIANCE_MAX_BATCH, default=1000"`
}
