package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// DevKeyPath is where the local stack keeps its development signing key,
// relative to the data dir.
const DevKeyPath = "clerk/dev-signing-key.pem"

func tokenCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "the Clerk user id (required), e.g. user_demo")
	org := fs.String("org", "", "the active organization id; the account is the org when set")
	sid := fs.String("sid", "", "the Clerk session id (default sess_<sub>)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime; negative for an expired token")
	v1 := fs.Bool("v1", false, "write the org as v1's org_id instead of v2's o.id")
	azp := fs.String("azp", "", "the authorized party (origin) claim")
	key := fs.String("key", "", "signing key file (default $RCM_DATA_DIR/"+DevKeyPath+")")
	issuer := fs.String("issuer", env(getenv, "RCM_CLERK_ISSUER", "http://127.0.0.1:8090"), "the iss claim")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" {
		return fmt.Errorf("token: --sub is required")
	}
	if *key == "" {
		*key = filepath.Join(env(getenv, "RCM_DATA_DIR", ".data"), DevKeyPath)
	}
	if *sid == "" {
		*sid = "sess_" + *sub
	}
	k, err := sessiontoken.LoadOrCreateKey(*key)
	if err != nil {
		return err
	}
	tok, err := sessiontoken.Mint(k, sessiontoken.Claims{
		Subject: *sub, SessionID: *sid, OrgID: *org, V1: *v1,
		Issuer: *issuer, AuthorizedParty: *azp, TTL: *ttl,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
