package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
)

// SessionCookie is the cookie in which Clerk's front-end keeps the session
// token on the application's own domain.
const SessionCookie = "__session"

// Middleware admits a request only with a verifying token and stores its
// principal in the request context (principal.From reads it); any other
// request is answered with the contract's 401 before next runs.
//
// The token is the Authorization header's. Without that header, a safe
// request (GET, HEAD) may carry it in Clerk's __session cookie, verified
// exactly alike; a request that changes state never takes the cookie,
// since a browser sends cookies with any site's form, so a cross-site form
// cannot act for a signed-in user. More than one Authorization header, or
// more than one __session cookie, counts as no token, since which of them
// applies would be a guess.
func (v *Verifier) Middleware(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := v.verifyRequest(r)
			if err != nil {
				logger.DebugContext(r.Context(), "request not authenticated",
					slog.String("request_id", httpx.RequestID(r.Context())), slog.Any("err", err))
				httpx.WriteError(w, r, logger, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(principal.WithPrincipal(r.Context(), p)))
		})
	}
}

// TicketMiddleware is Middleware for the stream, which also takes a stream
// ticket in its query ("ticket"), since a browser's EventSource cannot
// send an Authorization header. A request with a ticket is the ticket's
// principal, and TicketFrom names the ticket's id to the handler; an
// Authorization header beside it must verify too and name the same
// account and user (a cookie beside it is not read: it travels with any
// request of the page, whoever minted the ticket). A ticket that does not
// verify, or more than one, is the 401 of an invalid token.
func (v *Verifier) TicketMiddleware(logger *slog.Logger, tickets *Tickets) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, ok := r.URL.Query()[TicketParam]
			if !ok {
				v.Middleware(logger)(next).ServeHTTP(w, r)
				return
			}
			p, id, err := v.verifyTicket(r, raw, tickets)
			if err != nil {
				logger.DebugContext(r.Context(), "stream ticket refused",
					slog.String("request_id", httpx.RequestID(r.Context())), slog.Any("err", err))
				httpx.WriteError(w, r, logger, err)
				return
			}
			ctx := context.WithValue(principal.WithPrincipal(r.Context(), p), ticketKey{}, id)
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// TicketParam is the stream's query parameter that holds a ticket.
const TicketParam = "ticket"

func (v *Verifier) verifyTicket(r *http.Request, raw []string, tickets *Tickets) (principal.Principal, string, error) {
	if len(raw) != 1 {
		v.metrics.fail(reasonBadTicket)
		return principal.Principal{}, "", httpx.ErrInvalidToken.Wrap(errors.New("more than one ticket"))
	}
	p, id, err := tickets.Verify(raw[0])
	if err != nil {
		v.metrics.fail(reasonBadTicket)
		return principal.Principal{}, "", err
	}
	if authorization := r.Header.Values("Authorization"); len(authorization) > 0 {
		hp, err := v.verifyRequest(r)
		if err != nil {
			return principal.Principal{}, "", err
		}
		if hp.AccountID != p.AccountID || hp.UserID != p.UserID {
			v.metrics.fail(reasonBadTicket)
			return principal.Principal{}, "", httpx.ErrInvalidToken.Wrap(errors.New("the ticket is another account's or user's than the token"))
		}
	}
	return p, id, nil
}

type ticketKey struct{}

// TicketFrom returns the id of the ticket TicketMiddleware admitted the
// request with, if it was.
func TicketFrom(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(ticketKey{}).(string)
	return id, ok
}

func (v *Verifier) verifyRequest(r *http.Request) (principal.Principal, error) {
	authorization := r.Header.Values("Authorization")
	switch {
	case len(authorization) == 1:
		return v.Verify(r.Context(), authorization[0])
	case len(authorization) > 1:
		return principal.Principal{}, v.missing(errors.New("more than one Authorization header"))
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return v.verifyCookie(r.Context(), r.CookiesNamed(SessionCookie))
	default:
		return v.Verify(r.Context(), "")
	}
}

// verifyCookie verifies the token of the one __session cookie.
func (v *Verifier) verifyCookie(ctx context.Context, cookies []*http.Cookie) (principal.Principal, error) {
	switch {
	case len(cookies) == 0:
		return v.Verify(ctx, "")
	case len(cookies) > 1:
		return principal.Principal{}, v.missing(errors.New("more than one __session cookie"))
	case cookies[0].Value == "":
		return principal.Principal{}, v.missing(errors.New("empty __session cookie"))
	}
	return v.VerifyToken(ctx, cookies[0].Value)
}
