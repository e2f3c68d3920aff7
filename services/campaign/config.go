package main

import (
	"time"

	"github.com/rcm-platform/rcm/pkg/service"
)

// config is the campaign service's configuration; run sets the defaults
// that are constants of other packages before reading the environment.
type config struct {
	service.Base
	service.Kafka
	service.Mongo
	EventsTopic string `env:"RCM_EVENTS_TOPIC, overwrite"`
	// ConsentTopic is compacted (cleanup.policy=compact), as the service
	// creates it when it creates its topics, and as the local stack and
	// the deploy files do.
	ConsentTopic   string        `env:"RCM_CONSENT_TOPIC, default=rcm.consent.v1"`
	DocumentsTopic string        `env:"RCM_DOCUMENTS_TOPIC, default=documents.v1"`
	DocumentsDLQ   string        `env:"RCM_DOCUMENTS_DLQ_TOPIC"` // default: rcm.<documents topic>.dlq
	DocumentsGroup string        `env:"RCM_DOCUMENTS_GROUP, default=rcm-campaign"`
	SweepInterval  time.Duration `env:"RCM_OUTBOX_SWEEP_INTERVAL, default=5m"`
	SweepMinAge    time.Duration `env:"RCM_OUTBOX_SWEEP_MIN_AGE, default=30s"`
	// RemoveAfter is how long a published event waits in its record's
	// outbox for the next command's write to take it out (relay.Config).
	RemoveAfter time.Duration `env:"RCM_OUTBOX_REMOVE_AFTER, default=10s"`
}

// documentsDLQ is where documents nobody can apply are parked.
func (c config) documentsDLQ() string {
	if c.DocumentsDLQ != "" {
		return c.DocumentsDLQ
	}
	return "rcm." + c.DocumentsTopic + ".dlq"
}
