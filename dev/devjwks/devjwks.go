// Package devjwks owns the development stand-in for Clerk: an HTTP server
// that publishes a JWKS document of RSA keys kept on disk, and mints session
// tokens signed by the newest of them. The gateway verifies its tokens
// exactly as it verifies Clerk's, through the JWKS URL and the issuer.
package devjwks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// JWKSPath is where the JWKS document is served, as on a Clerk frontend API.
const JWKSPath = "/.well-known/jwks.json"

// Config says where the server listens and where its key lives.
type Config struct {
	// Addr to listen on; "127.0.0.1:0" picks a free port.
	Addr string
	// KeyPath is the PEM file of the signing key, created when missing, so
	// that tokens minted before a restart stay valid after it.
	KeyPath string
}

// Server is a running JWKS endpoint and token minter.
type Server struct {
	addr     string
	srv      *http.Server
	served   chan struct{}
	requests atomic.Int64

	mu   sync.RWMutex
	keys []sessiontoken.Key // oldest first; the last one signs
	jwks []byte

	closeOnce sync.Once
}

// Start loads or creates the key at cfg.KeyPath and serves the JWKS over
// HTTP on cfg.Addr until Close. ctx bounds only the start.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.KeyPath == "" {
		return nil, errors.New("dev JWKS: a key path is required")
	}
	key, err := sessiontoken.LoadOrCreateKey(cfg.KeyPath)
	if err != nil {
		return nil, fmt.Errorf("dev JWKS key: %w", err)
	}
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dev JWKS listen: %w", err)
	}
	s := &Server{
		addr:   ln.Addr().String(),
		served: make(chan struct{}),
		keys:   []sessiontoken.Key{key},
		jwks:   sessiontoken.JWKS(key),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+JWKSPath, s.serveJWKS)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *Server) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	s.requests.Add(1)
	s.mu.RLock()
	doc := s.jwks
	s.mu.RUnlock()
	w.Header().Set("Content-Type", "application/json")
	// Verifiers cache keys on their own terms (and refetch on an unknown
	// kid); tell HTTP caches not to keep a rotated-away document.
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(doc)
}

// Addr is the listening address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.addr }

// Issuer is the iss of the tokens minted here, "http://" + Addr.
func (s *Server) Issuer() string { return "http://" + s.addr }

// JWKSURL is the URL of the JWKS document.
func (s *Server) JWKSURL() string { return s.Issuer() + JWKSPath }

// Requests counts the JWKS requests served so far, so that tests can prove
// verifiers cache the keys instead of fetching them per token.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Key is the key that signs new tokens.
func (s *Server) Key() sessiontoken.Key {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keys[len(s.keys)-1]
}

// Rotate adds a new key, published alongside the previous ones, and signs
// new tokens with it: tokens minted before stay valid, and a verifier that
// cached the old document meets an unknown kid. The new key lives in memory
// only; a restart goes back to the key at KeyPath.
func (s *Server) Rotate() (sessiontoken.Key, error) {
	k, err := sessiontoken.NewKey()
	if err != nil {
		return sessiontoken.Key{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
	s.jwks = sessiontoken.JWKS(s.keys...)
	return k, nil
}

// DefaultTTL is the lifetime of a token minted with a zero TTL.
const DefaultTTL = time.Hour

// Mint signs a session token with the current key. The issuer defaults to
// Issuer() and a zero TTL to DefaultTTL (a negative one mints an expired
// token).
func (s *Server) Mint(c sessiontoken.Claims) (string, error) {
	if c.Issuer == "" {
		c.Issuer = s.Issuer()
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	return sessiontoken.Mint(s.Key(), c)
}

// Close stops the server and waits for it. It is safe to call more than
// once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		_ = s.srv.Close()
		<-s.served
	})
}
