// Package devpage serves the local stack's page for people, on a port of
// its own: sign in with a development token, watch the account's
// activity live (EventSource with a stream ticket, through the gateway,
// cross-origin as a real front-end would), start a campaign and record an
// opt-out on the seeded documents, read the compliance log with its
// verification and the latest checkpoint with its witness cosignature,
// and a document's consent and contact attempts. Plain HTML and
// JavaScript, embedded: nothing to build.
package devpage

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

//go:embed static
var static embed.FS

// Config says where the page listens and what it talks to.
type Config struct {
	// Addr to listen on; "127.0.0.1:0" picks a free port.
	Addr string
	// GatewayURL is the gateway the page calls; the gateway must list the
	// page's origin in RCM_CORS_ORIGINS.
	GatewayURL string
	// Mint signs a development session token (the stack's dev JWKS key).
	Mint func(sessiontoken.Claims) (string, error)
	// Account is the account signed in at first; Documents its seeded
	// documents, offered by the page.
	Account   string
	Documents []string
}

// Server is the running page.
type Server struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// Start listens on cfg.Addr and serves the page until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Mint == nil || cfg.GatewayURL == "" {
		return nil, errors.New("devpage: a gateway URL and a token minter are required")
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("devpage listen %s: %w", cfg.Addr, err)
	}
	files, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(files))
	mux.HandleFunc("GET /config.json", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"gatewayURL": cfg.GatewayURL, "account": cfg.Account, "documents": cfg.Documents})
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Sub string `json:"sub"`
			Org string `json:"org"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&in); err != nil || !strings.HasPrefix(in.Sub, "user_") {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"sub": "user_…", "org": "org_…" (optional)}`})
			return
		}
		tok, err := cfg.Mint(sessiontoken.Claims{Subject: in.Sub, SessionID: "sess_devpage", OrgID: in.Org, IssuedAt: time.Now(), TTL: time.Hour})
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"token": tok})
	})
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// URL is the page's address, which is also its origin.
func (s *Server) URL() string { return "http://" + s.addr }

// Close stops serving and waits for the server to end.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}
