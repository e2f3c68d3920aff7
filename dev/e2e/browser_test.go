package e2e

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
)

// The stream's 200 is checked against the OpenAPI file like any answer:
// its body, an event stream, is text.
func init() { openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder) }

// openTicketStream opens the stream as a browser's EventSource on another
// origin does: the ticket in the query, no Authorization header. It
// returns the answer and, when it is 200, a channel of the event names
// the stream sends.
func openTicketStream(t *testing.T, ctx context.Context, ticket string) (*http.Response, <-chan string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", stk.GatewayURL()+"/v1/activity/stream?ticket="+url.QueryEscape(ticket), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	checkOpenAPI(t, req, response{Status: resp.StatusCode, Header: resp.Header})
	names := make(chan string, 16)
	go func() {
		defer resp.Body.Close()
		defer close(names)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				names <- name
			}
		}
	}()
	return resp, names
}

// TestStreamTicketThroughTheStack: a ticket minted through the gateway
// opens the stream by itself, which delivers a campaign started after it
// opened; the same ticket then opens nothing, on the feed's record of its
// use; a forged ticket, and one sent beside another account's token, get
// the 401s. Every answer is as the OpenAPI file describes it.
func TestStreamTicketThroughTheStack(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_ticket_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)

	r := call(t, "POST", "/v1/activity/stream-tickets", tok, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("mint: got %d %s, want 201", r.Status, r.Body)
	}
	ticket, _ := r.JSON(t)["ticket"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	resp, names := openTicketStream(t, ctx, ticket)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream with the ticket: got %d, want 200", resp.StatusCode)
	}
	startCampaign(t, tok, doc, startBody())
	select {
	case name := <-names:
		if name != "campaign_started" {
			t.Fatalf("first event %q, want campaign_started", name)
		}
	case <-ctx.Done():
		t.Fatal("no live item on the ticket's stream within 90 s")
	}

	r = call(t, "GET", "/v1/activity/stream?ticket="+url.QueryEscape(ticket), "", nil)
	r.wantError(t, http.StatusUnauthorized, "Invalid or expired token.")

	forged := ticket[:len(ticket)-2] + "AA"
	if forged == ticket {
		forged = ticket[:len(ticket)-2] + "BB"
	}
	call(t, "GET", "/v1/activity/stream?ticket="+url.QueryEscape(forged), "", nil).
		wantError(t, http.StatusUnauthorized, "Invalid or expired token.")

	fresh := call(t, "POST", "/v1/activity/stream-tickets", tok, nil)
	other := token(t, newAccount(t, "org"))
	call(t, "GET", "/v1/activity/stream?ticket="+url.QueryEscape(fresh.JSON(t)["ticket"].(string)), other, nil).
		wantError(t, http.StatusUnauthorized, "Invalid or expired token.")
}
