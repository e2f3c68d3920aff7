package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// stepTimeout bounds one attempt of a start-up step.
const stepTimeout = 10 * time.Second

// retry runs step until it succeeds or ctx ends, with exponential backoff
// from 200ms to 5s, logging each failure: how a service waits for a store
// or a broker at start-up. It returns nil when ctx ends; the caller asks
// ctx why.
func retry(ctx context.Context, logger *slog.Logger, step Step) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		sctx, cancel := context.WithTimeout(ctx, stepTimeout)
		defer cancel()
		return struct{}{}, step.Do(sctx)
	},
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(0), // until ctx ends
		backoff.WithNotify(func(err error, next time.Duration) {
			logger.Warn("start-up step failed; retrying", slog.String("step", step.Name), slog.Duration("in", next), slog.Any("err", err))
		}),
	)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
