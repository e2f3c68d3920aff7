package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/service"
)

// TestRefusesToStartWithoutAuthorizedParties: outside the local stack (a
// secret of its own) a gateway with no RCM_CLERK_AUTHORIZED_PARTIES would
// accept tokens minted for any front-end of the Clerk instance; it refuses
// to start instead. The local stack (the development secret) may leave
// them out.
func TestRefusesToStartWithoutAuthorizedParties(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"RCM_HTTP_ADDR":       "127.0.0.1:0",
		"RCM_CLERK_JWKS_URL":  "http://127.0.0.1:1/.well-known/jwks.json",
		"RCM_INTERNAL_SECRET": strings.Repeat("s", 64),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := run(ctx, func(k string) string { return vars[k] }, io.Discard)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "RCM_CLERK_AUTHORIZED_PARTIES") {
		t.Fatalf("got %v (context: %v), want an error at start naming RCM_CLERK_AUTHORIZED_PARTIES", err, ctx.Err())
	}

	vars["RCM_INTERNAL_SECRET"] = principal.DevSecret
	var cfg config
	err = service.Load(ctx, func(k string) string { return vars[k] }, &cfg)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("the local stack's configuration: got %v, want it accepted", err)
	}
}

// TestRefusesWildcardCORSOrigin: with credentials allowed, a "*" origin
// would let any site's page read what a signed-in user's cookie gets.
func TestRefusesWildcardCORSOrigin(t *testing.T) {
	t.Parallel()
	for _, origins := range []string{"*", "https://app.example.com, https://*.example.com"} {
		vars := map[string]string{"RCM_INTERNAL_SECRET": principal.DevSecret, "RCM_CORS_ORIGINS": origins}
		var cfg config
		err := service.Load(t.Context(), func(k string) string { return vars[k] }, &cfg)
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "RCM_CORS_ORIGINS") {
			t.Errorf("RCM_CORS_ORIGINS=%q: got %v, want an error naming RCM_CORS_ORIGINS", origins, err)
		}
	}
}
