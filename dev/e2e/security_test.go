package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// The OWASP API Security Top 10 (2023), as it applies here. Cases already
// covered elsewhere are named in the table's comments.
//
//	API1 broken object level authorization: TestCrossAccountIsIndistinguishable,
//	     TestSpecErrorRows (other account's document and campaign), and below.
//	API2 broken authentication: TestTokenAttacks, the auth package's tests
//	     (alg none, HS256 with the public key, kid handling, leeway), and
//	     below (JWKS rotation, unknown-kid floods).
//	API3 broken object property level authorization: below (mass
//	     assignment, internals never in answers).
//	API4 unrestricted resource consumption: TestBodiesThroughTheGateway
//	     (64 KiB), below (rate limit, streams per account, page sizes,
//	     slow clients).
//	API5 broken function level authorization:
//	     TestInternalServicesRefuseForgedPrincipals, below (every internal
//	     service).
//	API6 sensitive business flows: the rate limit, and Idempotency-Key
//	     (TestIdempotencyKey) against double actions.
//	API7 SSRF: no route fetches a URL a client gives; the JWKS URL is
//	     configuration.
//	API8 security misconfiguration: below (no internals in errors, nosniff,
//	     no CORS, methods).
//	API9 improper inventory: the harness fails any /v1 answer openapi.yaml
//	     does not describe.
//	API10 unsafe consumption of APIs: documents.v1 and event records are
//	     validated against their schemas and dead-lettered
//	     (TestMalformedDocumentsGoToTheDeadLetterTopic,
//	     TestUnusableEventsAreDeadLettered).

// TestObjectLevelAuthorizationOnEveryRoute: another account's ids, in the
// path, the body or a filter, reach nothing on any route.
func TestObjectLevelAuthorizationOnEveryRoute(t *testing.T) {
	t.Parallel()
	victim, attacker := newAccount(t, "org"), newAccount(t, "org")
	vt, at := token(t, victim), token(t, attacker)
	doc := "doc_bola_" + victim
	putDoc(t, doc, victim, "BEHIND", 1)
	id := startCampaign(t, vt, doc, startBody())["id"].(string)
	waitLog(t, vt, 1)

	call(t, "POST", "/v1/documents/"+doc+"/rcm", at, startBody()).wantError(t, 404, notFound)
	call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", at, map[string]any{"campaignId": id, "channel": "all"}).wantError(t, 404, campaignNotFound)
	call(t, "GET", "/v1/documents/"+doc+"/rcm", at, nil).wantError(t, 404, notFound)
	call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, at, nil).wantError(t, 404, campaignNotFound)
	if got := logEntries(t, at, "&campaignId="+id); len(got) != 0 {
		t.Errorf("compliance log filtered by the victim's campaign: got %d entries", len(got))
	}
	if got := logEntries(t, at, "&documentId="+doc); len(got) != 0 {
		t.Errorf("compliance log filtered by the victim's document: got %d entries", len(got))
	}
	if v := verifyLog(t, at); v.HeadSeq != 0 {
		t.Errorf("attacker's verify sees %d entries", v.HeadSeq)
	}
	if got := activity(t, at); len(got) != 0 {
		t.Errorf("attacker's activity holds %d items", len(got))
	}
	// Nothing changed for the victim.
	c := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, vt, nil).JSON(t)["campaign"].(map[string]any)
	if c["active"] != true || len(c["optOuts"].([]any)) != 0 {
		t.Fatalf("the victim's campaign changed: %v", c)
	}
}

// TestMassAssignmentAndExposure: fields a client may not set are ignored,
// and answers carry no internals (account, outbox, revision).
func TestMassAssignmentAndExposure(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_mass_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	body := startBody()
	for k, v := range map[string]any{
		"id": "rcm_01k0b2z9y8x7w6v5u4t3s2r1q0", "active": false, "createdBy": "user_admin", "accountId": "org_victim",
		"activeChannels": []string{"call"}, "optOuts": []any{map[string]any{"channel": "all"}}, "createdAt": "2000-01-01T00:00:00.000Z",
		"outbox": []any{}, "revision": 99, "documentId": "doc_other",
	} {
		body[k] = v
	}
	r := call(t, "POST", "/v1/documents/"+doc+"/rcm", tok, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	c := r.JSON(t)["campaign"].(map[string]any)
	if c["id"] == "rcm_01k0b2z9y8x7w6v5u4t3s2r1q0" || c["active"] != true || c["createdBy"] != "user_member_of_"+acct ||
		c["documentId"] != doc || len(c["optOuts"].([]any)) != 0 || strings.HasPrefix(c["createdAt"].(string), "2000") {
		t.Fatalf("a client-supplied field was taken: %v", c)
	}
	for _, internal := range []string{"accountId", "outbox", "revision", "_id"} {
		if strings.Contains(string(r.Body), `"`+internal+`"`) {
			t.Errorf("the answer exposes %s: %s", internal, r.Body)
		}
	}
}

// TestResourceLimits: the per-account rate limit, the streams per account,
// page sizes.
func TestResourceLimits(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)

	call(t, "GET", "/v1/compliance-log?limit=201", tok, nil).wantError(t, 400, "Invalid query parameter.")
	call(t, "GET", "/v1/activity?limit=100000", tok, nil).wantError(t, 400, "Invalid query parameter.")
	call(t, "GET", "/v1/documents/doc_x/rcm?limit=201", tok, nil).wantError(t, 400, "Invalid query parameter.")

	// Streams: up to the cap, then 429.
	var subs []*subscriber
	for i := 0; i < 10; i++ {
		subs = append(subs, subscribe(t, tok))
	}
	call(t, "GET", "/v1/activity/stream", tok, nil).wantError(t, http.StatusTooManyRequests, "Too many requests. Retry later.")
	subs[0].close()
	eventually(t, 10*time.Second, "a stream slot to free up", func() bool {
		req, _ := http.NewRequest("GET", stk.GatewayURL()+"/v1/activity/stream", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// The rate limit: 1200 requests a minute per account; another account
	// is not affected.
	var limited atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{}
			for i := 0; i < 160; i++ {
				req, _ := http.NewRequest("GET", stk.GatewayURL()+"/v1/documents/doc_nowhere/rcm", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests {
					limited.Add(1)
					if resp.Header.Get("Retry-After") == "" {
						t.Error("429 without Retry-After")
					}
				}
			}
		}()
	}
	wg.Wait()
	if limited.Load() == 0 {
		t.Fatal("1280 requests in a burst were never limited")
	}
	call(t, "GET", "/v1/documents/doc_x/rcm", tok, nil).wantError(t, http.StatusTooManyRequests, "Too many requests. Retry later.")
	other := token(t, newAccount(t, "org"))
	call(t, "GET", "/v1/documents/doc_x/rcm", other, nil).wantError(t, 404, notFound)
}

// TestSlowClientsAreCut: a client that sends its headers slower than the
// server allows loses the connection.
func TestSlowClientsAreCut(t *testing.T) {
	t.Parallel()
	conn, err := net.Dial("tcp", strings.TrimPrefix(stk.GatewayURL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_, _ = fmt.Fprintf(conn, "GET /v1/activity HTTP/1.1\r\nHost: x\r\n")
	// Then nothing more: the header never ends.
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = bufio.NewReader(conn).ReadString('\n')
	if err == nil {
		// A 408 is an answer too; the connection must still close.
		_, err = bufio.NewReader(conn).ReadString('\n')
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("the connection was held %s", took)
	}
}

// TestEveryInternalServiceRefusesUnsignedCalls: no internal route answers
// without the gateway's signed principal.
func TestEveryInternalServiceRefusesUnsignedCalls(t *testing.T) {
	t.Parallel()
	routes := map[string][]string{
		stack.Campaign:   {"GET /v1/documents/doc_x/rcm", "POST /v1/documents/doc_x/rcm", "POST /v1/documents/doc_x/rcm/opt-out"},
		stack.Compliance: {"GET /v1/compliance-log", "GET /v1/compliance-log/verify"},
		stack.Feed:       {"GET /v1/activity", "GET /v1/activity/stream"},
	}
	for svc, rs := range routes {
		for _, route := range rs {
			method, path, _ := strings.Cut(route, " ")
			req, _ := http.NewRequest(method, stk.URL(svc)+path, strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			// Even a valid user token is not the gateway's proof.
			req.Header.Set("Authorization", "Bearer "+token(t, "org_x"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s: got %d, want 403", svc, route, resp.StatusCode)
			}
		}
	}
}

// TestJWKSIsNotHammered: a flood of tokens with unknown key ids costs at
// most a refresh or two of the JWKS; a rotated key is picked up.
func TestJWKSIsNotHammered(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	putDoc(t, "doc_jwks_"+acct, acct, "BEHIND", 1)
	before := stk.JWKS().Requests()
	for i := 0; i < 100; i++ {
		k, err := sessiontoken.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		k.ID = fmt.Sprintf("kid_flood_%d", i)
		tok, _ := sessiontoken.Mint(k, sessiontoken.Claims{Subject: "user_x", OrgID: acct, Issuer: stk.JWKS().Issuer(), TTL: time.Hour})
		call(t, "GET", "/v1/activity", tok, nil).wantError(t, 401, invalidToken)
		if i == 10 {
			break // key generation is slow; 11 distinct unknown kids make the point
		}
	}
	if n := stk.JWKS().Requests() - before; n > 2 {
		t.Fatalf("11 unknown kids made %d JWKS fetches, want at most 2", n)
	}
}

// TestHeadersAndLogsResistInjection: CR/LF in headers never reach a
// response header, and notes that look like log lines stay data.
func TestHeadersAndLogsResistInjection(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_inj_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)

	// A raw request with a folded, injected request id.
	conn, err := net.Dial("tcp", strings.TrimPrefix(stk.GatewayURL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc%%0d%%0aSet-Cookie:%%20pwned=1\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Set-Cookie") != "" || strings.ContainsAny(resp.Header.Get("X-Request-Id"), "%\r\n") {
		t.Fatalf("injected header reached the response: %v", resp.Header)
	}
	call(t, "POST", "/v1/documents/"+doc+"/rcm", tok, startBody(), "Idempotency-Key", "a\tb").wantError(t, 400, "Invalid Idempotency-Key header.")

	// Notes that forge a log line.
	forged := `x"}` + "\n" + `{"level":"ERROR","msg":"FORGED_LOG_LINE","service":"campaign"}`
	body := startBody()
	body["notes"] = forged
	id := startCampaign(t, tok, doc, body)["id"].(string)
	call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": id, "channel": "sms", "notes": forged})
	waitLog(t, tok, 2)
	for _, line := range strings.Split(logBuf.String(), "\n") {
		if strings.HasPrefix(line, `{"level":"ERROR","msg":"FORGED_LOG_LINE"`) {
			t.Fatalf("a client's notes forged a log line: %s", line)
		}
	}
	// And they are stored exactly as sent (trimmed), not mangled.
	c := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, tok, nil).JSON(t)["campaign"].(map[string]any)
	if c["notes"] != forged {
		t.Fatalf("got notes %q, want them as sent", c["notes"])
	}
}

// TestMisconfigurationIsNotExposed: errors carry no internals, answers are
// nosniff, no CORS is granted, unknown methods are refused.
func TestMisconfigurationIsNotExposed(t *testing.T) {
	t.Parallel()
	tok := token(t, newAccount(t, "org"))
	r := call(t, "POST", "/v1/documents/doc_x/rcm", tok, `{"sms":`)
	r.wantError(t, 400, invalidBody)
	for _, leak := range []string{"goroutine", ".go:", "mongo", "sqlite", "kafka", "panic"} {
		if strings.Contains(strings.ToLower(string(r.Body)), leak) {
			t.Errorf("error body mentions %q: %s", leak, r.Body)
		}
	}
	if r.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no X-Content-Type-Options: nosniff")
	}
	req, _ := http.NewRequest("OPTIONS", stk.GatewayURL()+"/v1/activity", nil)
	req.Header.Set("Origin", "https://evil.example.com")
	req.Header.Set("Access-Control-Request-Method", "GET")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS granted to %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("OPTIONS: got %d, want 405", resp.StatusCode)
	}
	call(t, "DELETE", "/v1/documents/doc_x/rcm", tok, nil).wantError(t, http.StatusMethodNotAllowed, "Method not allowed.")
}
