package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/httpx"
	"github.com/rcm-platform/rcm/pkg/principal"
)

const testSecret = "a-test-secret-of-at-least-32-bytes-long"

// TestTickets: a ticket verifies to the principal it was minted for,
// until it expires TicketTTL later; a changed payload or signature, a
// ticket of another secret, or anything that is no ticket does not.
func TestTickets(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 5, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tickets, err := NewTickets(testSecret, clock)
	if err != nil {
		t.Fatal(err)
	}
	p := principal.Principal{AccountID: "org_1", UserID: "user_1", SessionID: "sess_1", OrgID: "org_1"}
	tk, err := tickets.Mint(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(TicketTTL); !tk.ExpiresAt.Equal(want) {
		t.Errorf("expires at %s, want %s", tk.ExpiresAt, want)
	}
	got, id, err := tickets.Verify(tk.Value)
	if err != nil || got != p || id != tk.ID || len(id) != 26 {
		t.Fatalf("verify: got %+v, id %q, %v; want %+v, id %q", got, id, err, p, tk.ID)
	}
	second, _ := tickets.Mint(p)
	if second.ID == tk.ID || second.Value == tk.Value {
		t.Errorf("two tickets share id %s", tk.ID)
	}

	other, _ := NewTickets(strings.Repeat("o", 40), clock)
	ofOther, _ := other.Mint(p)
	parts := strings.Split(tk.Value, ".")
	forgedPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"id":"` + tk.ID + `","acct":"org_2","sub":"user_1","sid":"sess_1","org":"org_2","exp":` + "9999999999999" + `}`))
	refused := map[string]string{
		"another secret's":   ofOther.Value,
		"changed payload":    parts[0] + "." + forgedPayload + "." + parts[2],
		"changed signature":  parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])),
		"no signature":       parts[0] + "." + parts[1],
		"another version":    "v0." + parts[1] + "." + parts[2],
		"a session token":    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln",
		"empty":              "",
		"far too long":       strings.Repeat("x", maxTicketBytes+1),
		"signature in clear": parts[0] + "." + parts[1] + "." + parts[2] + "x",
	}
	for name, raw := range refused {
		if _, _, err := tickets.Verify(raw); !errors.Is(err, httpx.ErrInvalidToken) {
			t.Errorf("%s ticket: got %v, want ErrInvalidToken", name, err)
		}
	}

	now = now.Add(TicketTTL)
	if _, _, err := tickets.Verify(tk.Value); err != nil {
		t.Errorf("at its expiry: got %v, want it valid", err)
	}
	now = now.Add(time.Millisecond)
	if _, _, err := tickets.Verify(tk.Value); !errors.Is(err, httpx.ErrInvalidToken) {
		t.Errorf("past its expiry: got %v, want ErrInvalidToken", err)
	}
	if _, err := NewTickets("short", clock); err == nil {
		t.Error("a secret of 5 bytes: got no error")
	}
}
