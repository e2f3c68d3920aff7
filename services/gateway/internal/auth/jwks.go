package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// fetchTimeout bounds one fetch of the JWKS, including the one NewVerifier
// waits for.
const fetchTimeout = 5 * time.Second

// newKeySource returns the keyfunc that finds a token's key in the cached
// JWKS at cfg.JWKSURL.
//
// jwkset can refresh on an unknown kid by itself, but its rate limiter
// waits (rate.Limiter.Wait) instead of refusing, so under a flood of
// unknown kids requests would queue for a refresh slot. Here the cache is
// read without refreshing, and a miss refreshes only when a non-blocking
// limiter allows it; every other miss is refused at once.
func newKeySource(ctx context.Context, cfg Config, m *metrics, logger *slog.Logger) (keyfunc.Keyfunc, error) {
	client := *cfg.HTTPClient
	next := client.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	client.Transport = countingTransport{next: next, ok: m.refreshOK, failed: m.refreshErr}

	remote, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:      &client,
		Ctx:         ctx,
		HTTPTimeout: fetchTimeout,
		// Start without keys when Clerk is unreachable; a later refresh
		// fills the cache.
		NoErrorReturnFirstHTTPReq: true,
		RefreshErrorHandler: func(ctx context.Context, err error) {
			logger.WarnContext(ctx, "JWKS refresh failed", slog.String("url", cfg.JWKSURL), slog.Any("err", err))
		},
		RefreshInterval: cfg.RefreshInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("JWKS storage: %w", err)
	}
	cached, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{cfg.JWKSURL: remote},
	})
	if err != nil {
		return nil, fmt.Errorf("JWKS cache: %w", err)
	}
	refreshing, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{cfg.JWKSURL: remote},
		// The gate below does the limiting; this limiter never waits.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
		// Bounds the refresh on behalf of one request.
		RateLimitWaitMax: fetchTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("JWKS refresher: %w", err)
	}
	kf, err := keyfunc.New(keyfunc.Options{
		Ctx: ctx,
		Storage: refreshGate{
			Storage:    cached,
			refreshing: refreshing,
			limiter:    rate.NewLimiter(rate.Every(cfg.UnknownKIDRefreshInterval), 1),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("keyfunc: %w", err)
	}
	return kf, nil
}

// refreshGate is the JWKS storage keyfunc reads: the cache, and on a miss
// at most one refresh per limiter interval, never waiting for one.
type refreshGate struct {
	jwkset.Storage
	refreshing jwkset.Storage
	limiter    *rate.Limiter
}

// KeyRead returns the key with id kid.
func (g refreshGate) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	jwk, err := g.Storage.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) || !g.limiter.Allow() {
		return jwk, err
	}
	return g.refreshing.KeyRead(ctx, kid)
}

// countingTransport counts the HTTP fetches of the JWKS where they happen,
// so the metric is the number of requests actually sent.
type countingTransport struct {
	next       http.RoundTripper
	ok, failed prometheus.Counter
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.failed.Inc()
	} else {
		t.ok.Inc()
	}
	return resp, err
}
