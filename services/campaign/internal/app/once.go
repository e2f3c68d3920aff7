package app

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/services/campaign/internal/idempotency"
)

// Answer is a command's answer as the contract words it: a status and a
// JSON body. With an Idempotency-Key, a contract error is an answer too
// (it is stored for the retries), and Replayed marks the answer stored for
// an earlier request with the key, sent again as it was.
type Answer struct {
	Status   int
	Body     []byte
	Replayed bool
}

func answer(status int, v any) (Answer, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return Answer{}, err
	}
	return Answer{Status: status, Body: append(body, '\n')}, nil
}

// command runs a command on the campaign id target (chosen at the first
// attempt of a request); recovering says an earlier attempt with the same
// Idempotency-Key was cut short, and the command must find what it wrote
// and answer that, or prove it wrote nothing and run.
type command func(target string, recovering bool) (status int, v any, err error)

// once runs cmd at most once per Idempotency-Key of the account: the
// first time it runs cmd and stores its answer (a success or a contract
// error), later it answers what was stored. Without a key it just runs
// cmd. Every command that changes state runs through once and answers
// recovering.
//
// A failure never frees the key unless cmd proves it wrote nothing
// (idempotency.NothingWritten, and only on a fresh claim): any other
// failure may have come after a write whose answer was lost (a store reply
// past the deadline, a timeout, a failover), so the claim is kept,
// interrupted, and the next request with the key recovers at once.
func (a *Campaigns) once(ctx context.Context, req Request, target string, cmd command) (Answer, error) {
	if req.Key == "" || a.claims == nil {
		status, v, err := cmd(target, false)
		if err != nil {
			return Answer{}, err
		}
		return answer(status, v)
	}
	rec, outcome, err := a.claims.Begin(ctx, req.Principal.AccountID, req.Key, req.Fingerprint, target)
	switch {
	case errors.Is(err, idempotency.ErrMismatch):
		return Answer{}, httpx.ErrKeyReused
	case errors.Is(err, idempotency.ErrInProgress):
		return Answer{}, httpx.ErrKeyInProgress
	case err != nil:
		return Answer{}, contractError(err, httpx.ErrNotFound)
	case outcome == idempotency.Replay:
		return Answer{Status: rec.Status, Body: []byte(rec.Body), Replayed: true}, nil
	}
	recovering := outcome == idempotency.Recover
	status, v, err := cmd(rec.CampaignID, recovering)
	if recovering {
		// The interrupted attempt's events, if it wrote any, were never
		// handed to the relay.
		a.relay.Missed()
	}
	var ans Answer
	if err != nil {
		s, b, ok := httpx.Render(err)
		if !ok || s >= 500 {
			a.keepClaim(context.WithoutCancel(ctx), rec, recovering, err)
			return Answer{}, err
		}
		ans = Answer{Status: s, Body: b}
	} else if ans, err = answer(status, v); err != nil {
		return Answer{}, err
	}
	if err := a.claims.Finish(context.WithoutCancel(ctx), rec, ans.Status, ans.Body); err != nil {
		// The command ran; its answer is not stored. A retry finds the
		// claim pending, then stale, and recovers the answer from what
		// the command wrote.
		a.logger.WarnContext(ctx, "idempotent answer not stored", slog.String("request_id", httpx.RequestID(ctx)), slog.Any("err", err))
	}
	return ans, nil
}

// keepClaim settles the claim of a command that failed without an answer
// to store: released if the command proved it wrote nothing, else
// interrupted for the next request to recover.
func (a *Campaigns) keepClaim(ctx context.Context, rec idempotency.Record, recovering bool, cause error) {
	if !recovering && idempotency.IsNothingWritten(cause) {
		a.claims.Release(ctx, rec)
		return
	}
	if err := a.claims.Interrupt(ctx, rec); err != nil {
		// The claim stays pending: a retry recovers it once stale.
		a.logger.WarnContext(ctx, "idempotency claim not marked interrupted", slog.String("request_id", httpx.RequestID(ctx)), slog.Any("err", err))
	}
}
