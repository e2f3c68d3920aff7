// Package upstream forwards the gateway's requests to the internal services
// with the verified principal signed, and relays their answers.
package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// Service is one internal service behind the gateway.
type Service struct {
	base   *url.URL
	client *http.Client
	signer *principal.Signer
}

// New returns the service at baseURL. client carries the timeouts; nil means
// a client suited to short commands and reads.
func New(baseURL string, signer *principal.Signer, client *http.Client) (*Service, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream URL %q: want http(s)://host[:port]", baseURL)
	}
	if client == nil {
		client = NewClient(15 * time.Second)
	}
	return &Service{base: u, client: client, signer: signer}, nil
}

// NewClient returns an HTTP client for internal calls with a whole-request
// timeout (0 for none, as a stream needs), a connection pool sized for the
// gateway's concurrency, and a client span per call (otelhttp) whose
// trace context the call carries.
func NewClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 512
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = 15 * time.Second
	return &http.Client{Transport: httpx.Transport(t), Timeout: timeout}
}

// Request builds the internal request for the incoming one: same method,
// the given escaped path and query, body, the request id, the trace
// context of the incoming request (a traceparent it came with, or the
// gateway's span), and the signed principal.
func (s *Service) Request(in *http.Request, p principal.Principal, escapedPath, rawQuery string, body []byte) (*http.Request, error) {
	u := *s.base
	u.RawPath = escapedPath
	path, err := url.PathUnescape(escapedPath)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", escapedPath, err)
	}
	u.Path = path
	u.RawQuery = rawQuery
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(in.Context(), in.Method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		out.Header.Set("Content-Type", "application/json")
	}
	out.Header.Set("Accept", in.Header.Get("Accept"))
	out.Header.Set(httpx.HeaderRequestID, httpx.RequestID(in.Context()))
	// A traced transport replaces it with its call's span's.
	otel.GetTextMapPropagator().Inject(in.Context(), propagation.HeaderCarrier(out.Header))
	for _, h := range []string{"Last-Event-ID", "Idempotency-Key"} {
		if v := in.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	if err := s.signer.Sign(out, p); err != nil {
		return nil, err
	}
	return out, nil
}

// Do sends req and returns the response; a service that cannot be reached
// or does not answer in time is httpx.ErrUnavailable.
func (s *Service) Do(req *http.Request) (*http.Response, error) {
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
			return nil, err
		}
		return nil, httpx.ErrUnavailable.Wrap(err)
	}
	return resp, nil
}

// Relay copies an internal response to the client: status, body, and the
// headers a client may rely on.
func Relay(w http.ResponseWriter, resp *http.Response) error {
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Retry-After", "WWW-Authenticate", "Idempotent-Replayed"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(resp.StatusCode)
	_, err := io.Copy(w, resp.Body)
	return err
}
