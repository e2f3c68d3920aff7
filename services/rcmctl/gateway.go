package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// gateway reads the public API for one account.
type gateway struct {
	url, token, dataDir, issuer string
}

func gatewayFlags(fs *flag.FlagSet, getenv func(string) string) *gateway {
	g := &gateway{dataDir: env(getenv, "RCM_DATA_DIR", ".data"), issuer: env(getenv, "RCM_CLERK_ISSUER", "http://127.0.0.1:8090")}
	fs.StringVar(&g.url, "gateway", env(getenv, "RCM_GATEWAY_URL", "http://127.0.0.1:8080"), "the gateway's base URL")
	fs.StringVar(&g.token, "token", getenv("RCM_TOKEN"),
		"a session token of the account (default: a development token, when the local stack's key is under $RCM_DATA_DIR)")
	return g
}

// errNotFound is the gateway's 404.
var errNotFound = errors.New("not found")

// get answers the body of GET path as the account, errNotFound on a 404.
func (g *gateway) get(ctx context.Context, account, path string) ([]byte, error) {
	token, err := g.tokenFor(account)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(g.url, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return body, nil
	case http.StatusNotFound:
		return nil, errNotFound
	}
	return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
}

// tokenFor returns the given token or, on the local stack, a development
// token whose account is account (an org_ account as the active
// organization of a development user, any other as the user).
func (g *gateway) tokenFor(account string) (string, error) {
	if g.token != "" {
		return g.token, nil
	}
	keyPath := filepath.Join(g.dataDir, DevKeyPath)
	if _, err := os.Stat(keyPath); err != nil {
		return "", fmt.Errorf("give --token (or RCM_TOKEN): a session token of %s (no development key at %s)", account, keyPath)
	}
	k, err := sessiontoken.LoadOrCreateKey(keyPath)
	if err != nil {
		return "", err
	}
	c := sessiontoken.Claims{Subject: account, SessionID: "sess_rcmctl", Issuer: g.issuer, TTL: 5 * time.Minute}
	if strings.HasPrefix(account, "org_") {
		c.Subject, c.OrgID = "user_rcmctl", account
	}
	return sessiontoken.Mint(k, c)
}
