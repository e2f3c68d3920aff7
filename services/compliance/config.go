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
	// SigningKey is the checkpoints' Ed25519 seed (base64) or the path of
	// a file holding it: required, never in the database.
	SigningKey       string       `env:"RCM_LOG_SIGNING_KEY"`
	Origin           string       `env:"RCM_LOG_ORIGIN, default=rcm.local/compliance"`
	Witnesses        service.List `env:"RCM_LOG_WITNESSES"`
	CheckpointsTopic string       `env:"RCM_CHECKPOINTS_TOPIC, overwrite"`
}
