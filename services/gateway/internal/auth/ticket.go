package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
)

// TicketTTL is how long a stream ticket opens a stream.
const TicketTTL = 60 * time.Second

// ticketVersion starts every ticket, so that a later format can be told
// apart (and a session token never parses as a ticket).
const ticketVersion = "st1"

// maxTicketBytes bounds what is decoded: a ticket is about 250 bytes.
const maxTicketBytes = 1 << 10

// Tickets mints and verifies stream tickets: what a page gives
// EventSource, which cannot send an Authorization header, in the stream's
// query. A ticket is the verified principal, an id and an expiry, signed
// with HMAC-SHA256 under a key derived from the secret every gateway
// replica shares, so any replica verifies a ticket any replica minted.
// That it opens one stream only is the feed's to record, under the
// ticket's id (the gateway holds no state): the stream route passes the
// id on.
type Tickets struct {
	key []byte
	now func() time.Time
}

// NewTickets returns Tickets signing under a key derived from secret
// (RCM_INTERNAL_SECRET, at least 32 bytes): a ticket's signature is never
// a valid signature of anything else signed with the secret.
func NewTickets(secret string, now func() time.Time) (*Tickets, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("ticket secret is %d bytes, want at least 32", len(secret))
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("rcm stream ticket key v1"))
	return &Tickets{key: m.Sum(nil), now: now}, nil
}

// Ticket is a minted ticket.
type Ticket struct {
	Value     string    // what the client sends
	ID        string    // a lowercase ULID minted with it
	ExpiresAt time.Time // the last instant it is accepted
}

// ticketClaims are what a ticket carries.
type ticketClaims struct {
	ID        string `json:"id"`
	AccountID string `json:"acct"`
	UserID    string `json:"sub"`
	SessionID string `json:"sid,omitempty"`
	OrgID     string `json:"org,omitempty"`
	Expires   int64  `json:"exp"` // unix milliseconds
}

// Mint returns a ticket for p valid TicketTTL from now.
func (t *Tickets) Mint(p principal.Principal) (Ticket, error) {
	now := t.now()
	id, err := ulid.New(ulid.Timestamp(now), rand.Reader)
	if err != nil {
		return Ticket{}, fmt.Errorf("mint ticket: %w", err)
	}
	exp := now.Add(TicketTTL).Truncate(time.Millisecond)
	c := ticketClaims{ID: strings.ToLower(id.String()), AccountID: p.AccountID, UserID: p.UserID,
		SessionID: p.SessionID, OrgID: p.OrgID, Expires: exp.UnixMilli()}
	raw, err := json.Marshal(c)
	if err != nil {
		return Ticket{}, fmt.Errorf("mint ticket: %w", err)
	}
	signed := ticketVersion + "." + base64.RawURLEncoding.EncodeToString(raw)
	return Ticket{Value: signed + "." + t.mac(signed), ID: c.ID, ExpiresAt: exp}, nil
}

func (t *Tickets) mac(signed string) string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(signed))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

var (
	errTicketMalformed = errors.New("ticket is malformed")
	errTicketSignature = errors.New("ticket signature does not verify")
	errTicketExpired   = errors.New("ticket expired")
)

// Verify returns the principal and the id of the ticket raw; a ticket
// that does not verify or has expired gives an error matching
// httpx.ErrInvalidToken, whose Cause says why.
func (t *Tickets) Verify(raw string) (principal.Principal, string, error) {
	c, err := t.verify(raw)
	if err != nil {
		return principal.Principal{}, "", httpx.ErrInvalidToken.Wrap(err)
	}
	return principal.Principal{AccountID: c.AccountID, UserID: c.UserID, SessionID: c.SessionID, OrgID: c.OrgID}, c.ID, nil
}

func (t *Tickets) verify(raw string) (ticketClaims, error) {
	var c ticketClaims
	if len(raw) > maxTicketBytes {
		return c, errTicketMalformed
	}
	i := strings.LastIndexByte(raw, '.')
	if i < 0 || !strings.HasPrefix(raw, ticketVersion+".") {
		return c, errTicketMalformed
	}
	signed, sig := raw[:i], raw[i+1:]
	if !hmac.Equal([]byte(t.mac(signed)), []byte(sig)) {
		return c, errTicketSignature
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(signed, ticketVersion+"."))
	if err != nil || json.Unmarshal(payload, &c) != nil || c.ID == "" || c.AccountID == "" || c.UserID == "" {
		return c, errTicketMalformed
	}
	if t.now().UnixMilli() > c.Expires {
		return c, errTicketExpired
	}
	return c, nil
}
