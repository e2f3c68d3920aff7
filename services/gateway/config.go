package main

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/service"
)

// config is the gateway's configuration.
type config struct {
	service.Base
	JWKSURL           string       `env:"RCM_CLERK_JWKS_URL, default=http://127.0.0.1:8090/.well-known/jwks.json"`
	Issuer            string       `env:"RCM_CLERK_ISSUER"`
	AuthorizedParties service.List `env:"RCM_CLERK_AUTHORIZED_PARTIES"`
	// CORSOrigins are the origins whose pages may call the API; the
	// authorized parties when unset, since those are the front-ends'
	// origins.
	CORSOrigins       service.List  `env:"RCM_CORS_ORIGINS"`
	CampaignURL       string        `env:"RCM_CAMPAIGN_URL, default=http://127.0.0.1:8081"`
	ComplianceURL     string        `env:"RCM_COMPLIANCE_URL, default=http://127.0.0.1:8082"`
	FeedURL           string        `env:"RCM_FEED_URL, default=http://127.0.0.1:8083"`
	RateLimit         int           `env:"RCM_RATE_LIMIT, default=1200"`
	RateWindow        time.Duration `env:"RCM_RATE_WINDOW, default=1m"`
	StreamsPerAccount int           `env:"RCM_SSE_MAX_PER_ACCOUNT, default=10"`
}

// Validate refuses a production gateway without authorized parties: it
// would accept a token minted for any front-end of the Clerk instance,
// and a warning in a log is too easy to miss for that. The local stack,
// recognised by its development secret, mints tokens without azp.
// A "*" among the CORS origins is refused too: with credentials allowed,
// it would let every site's pages read the answers a signed-in user's
// cookie gets.
func (c *config) Validate() error {
	if len(c.AuthorizedParties) == 0 && c.InternalSecret != principal.DevSecret {
		return errors.New("RCM_CLERK_AUTHORIZED_PARTIES is not set: outside the local stack the gateway checks every token's azp against your front-ends' origins (comma-separated)")
	}
	if slices.ContainsFunc(c.corsOrigins(), func(o string) bool { return strings.Contains(o, "*") }) {
		return errors.New("RCM_CORS_ORIGINS holds a wildcard: list the origins of your front-ends (comma-separated)")
	}
	return nil
}

// corsOrigins are RCM_CORS_ORIGINS, else the authorized parties.
func (c *config) corsOrigins() []string {
	if len(c.CORSOrigins) > 0 {
		return c.CORSOrigins
	}
	return c.AuthorizedParties
}
