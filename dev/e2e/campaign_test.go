package e2e

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

const (
	missingToken     = "Missing Authorization Bearer token."
	invalidToken     = "Invalid or expired token."
	invalidBody      = "Invalid body."
	noChannel        = "At least one channel must be true."
	loanRule         = "RCM only when a loan exists and status is BEHIND."
	notFound         = "Not found."
	campaignNotFound = "Campaign not found or access denied."
)

// TestSpecErrorRows walks every row of the spec's two error tables through
// the running gateway, and the contract's check order.
func TestSpecErrorRows(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	other := newAccount(t, "org")
	tok, otherTok := token(t, acct), token(t, other)
	putDoc(t, "doc_rows_behind_"+acct, acct, "BEHIND", 1)
	putDoc(t, "doc_rows_current_"+acct, acct, "CURRENT", 1)
	putDoc(t, "doc_rows_noloan_"+acct, acct, "", 1)
	putDoc(t, "doc_rows_other_"+other, other, "BEHIND", 1)
	putDoc(t, "doc_rows_othercur_"+other, other, "CURRENT", 1)
	behind := "/v1/documents/doc_rows_behind_" + acct + "/rcm"
	c := startCampaign(t, tok, "doc_rows_behind_"+acct, startBody())
	otherCampaign := startCampaign(t, otherTok, "doc_rows_other_"+other, startBody())
	putDoc(t, "doc_rows_behind2_"+acct, acct, "BEHIND", 1)
	siblingCampaign := startCampaign(t, tok, "doc_rows_behind2_"+acct, startBody())
	expired, err := stk.Token(sessiontoken.Claims{Subject: "user_x", OrgID: acct, TTL: -time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	noChannels := map[string]any{"sms": false, "email": false, "call": false, "tone": "t", "cadence": "c"}
	optOut := func(campaignID string) map[string]any {
		return map[string]any{"campaignId": campaignID, "channel": "sms", "notes": "stop"}
	}

	tests := []struct {
		name    string
		method  string
		path    string
		tok     string
		body    any
		hdr     []string
		status  int
		message string
	}{
		// Start campaign.
		{"start: missing field", "POST", behind, tok, map[string]any{"sms": true, "email": true, "call": false, "tone": "t"}, nil, 400, invalidBody},
		{"start: tone over 80", "POST", behind, tok, map[string]any{"sms": true, "email": true, "call": false, "tone": strings.Repeat("x", 81), "cadence": "c"}, nil, 400, invalidBody},
		{"start: all channels false", "POST", behind, tok, noChannels, nil, 400, noChannel},
		{"start: loan CURRENT", "POST", "/v1/documents/doc_rows_current_" + acct + "/rcm", tok, startBody(), nil, 400, loanRule},
		{"start: no loan", "POST", "/v1/documents/doc_rows_noloan_" + acct + "/rcm", tok, startBody(), nil, 400, loanRule},
		{"start: no Authorization", "POST", behind, "", startBody(), nil, 401, missingToken},
		{"start: not Bearer", "POST", behind, "", startBody(), []string{"Authorization", "Basic dXNlcjpwYXNz"}, 401, missingToken},
		{"start: expired token", "POST", behind, expired, startBody(), nil, 401, invalidToken},
		{"start: malformed token", "POST", behind, "not.a.jwt", startBody(), nil, 401, invalidToken},
		{"start: no such document", "POST", "/v1/documents/doc_nowhere_" + acct + "/rcm", tok, startBody(), nil, 404, notFound},
		{"start: other account's document", "POST", "/v1/documents/doc_rows_other_" + other + "/rcm", tok, startBody(), nil, 404, notFound},
		// Check order.
		{"order: auth before body", "POST", behind, "", "not json", nil, 401, missingToken},
		{"order: body before channel rule", "POST", behind, tok, map[string]any{"sms": false, "email": false, "call": false, "tone": "", "cadence": "c"}, nil, 400, invalidBody},
		{"order: channel rule before ownership", "POST", "/v1/documents/doc_nowhere/rcm", tok, noChannels, nil, 400, noChannel},
		{"order: ownership before loan rule", "POST", "/v1/documents/doc_rows_othercur_" + other + "/rcm", tok, startBody(), nil, 404, notFound},
		{"order: malformed document id is not found", "POST", "/v1/documents/%20bad%20/rcm", tok, startBody(), nil, 404, notFound},
		// Opt-out.
		{"opt-out: missing campaignId", "POST", behind + "/opt-out", tok, map[string]any{"channel": "sms"}, nil, 400, invalidBody},
		{"opt-out: bad channel", "POST", behind + "/opt-out", tok, map[string]any{"campaignId": c["id"], "channel": "fax"}, nil, 400, invalidBody},
		{"opt-out: notes over 2000", "POST", behind + "/opt-out", tok, map[string]any{"campaignId": c["id"], "channel": "sms", "notes": strings.Repeat("n", 2001)}, nil, 400, invalidBody},
		{"opt-out: no Authorization", "POST", behind + "/opt-out", "", optOut(c["id"].(string)), nil, 401, missingToken},
		{"opt-out: expired token", "POST", behind + "/opt-out", expired, optOut(c["id"].(string)), nil, 401, invalidToken},
		{"opt-out: no such campaign", "POST", behind + "/opt-out", tok, optOut("rcm_01k0b2z9y8x7w6v5u4t3s2r1q0"), nil, 404, campaignNotFound},
		{"opt-out: not a campaign id", "POST", behind + "/opt-out", tok, optOut("nonsense"), nil, 404, campaignNotFound},
		{"opt-out: campaign of another document", "POST", behind + "/opt-out", tok, optOut(siblingCampaign["id"].(string)), nil, 404, campaignNotFound},
		{"opt-out: campaign of another account", "POST", "/v1/documents/doc_rows_other_" + other + "/rcm/opt-out", tok, optOut(otherCampaign["id"].(string)), nil, 404, campaignNotFound},
		{"opt-out: order, body before campaign", "POST", behind + "/opt-out", tok, map[string]any{"campaignId": "rcm_01k0b2z9y8x7w6v5u4t3s2r1q0", "channel": "x"}, nil, 400, invalidBody},
		// Reads.
		{"get: other account's campaign", "GET", "/v1/documents/doc_rows_other_" + other + "/rcm/" + otherCampaign["id"].(string), tok, nil, nil, 404, campaignNotFound},
		{"get: campaign under another document", "GET", behind + "/" + siblingCampaign["id"].(string), tok, nil, nil, 404, campaignNotFound},
		{"list: other account's document", "GET", "/v1/documents/doc_rows_other_" + other + "/rcm", tok, nil, nil, 404, notFound},
		{"list: no such document", "GET", "/v1/documents/doc_nowhere_" + acct + "/rcm", tok, nil, nil, 404, notFound},
		{"list: no token", "GET", behind, "", nil, nil, 401, missingToken},
		{"list: bad limit", "GET", behind + "?limit=0", tok, nil, nil, 400, contract.MsgInvalidQuery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, tt.method, tt.path, tt.tok, tt.body, tt.hdr...)
			r.wantError(t, tt.status, tt.message)
			if tt.status == http.StatusUnauthorized && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("got WWW-Authenticate %q, want Bearer", r.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

// TestCrossAccountIsIndistinguishable: another account's document and
// campaign answer exactly as nonexistent ones do, body for body.
func TestCrossAccountIsIndistinguishable(t *testing.T) {
	t.Parallel()
	acct, other := newAccount(t, "user"), newAccount(t, "org")
	tok, otherTok := token(t, acct), token(t, other)
	putDoc(t, "doc_x_"+other, other, "BEHIND", 1)
	theirs := startCampaign(t, otherTok, "doc_x_"+other, startBody())

	strip := func(r response) string {
		var m map[string]any
		_ = json.Unmarshal(r.Body, &m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	pairs := []struct {
		name          string
		method        string
		theirs, ghost string
		body          any
	}{
		{"start", "POST", "/v1/documents/doc_x_" + other + "/rcm", "/v1/documents/doc_x_ghost/rcm", startBody()},
		{"list", "GET", "/v1/documents/doc_x_" + other + "/rcm", "/v1/documents/doc_x_ghost/rcm", nil},
		{"get", "GET", "/v1/documents/doc_x_" + other + "/rcm/" + theirs["id"].(string), "/v1/documents/doc_x_" + other + "/rcm/rcm_01k0b2z9y8x7w6v5u4t3s2r1q0", nil},
	}
	for _, p := range pairs {
		a := call(t, p.method, p.theirs, tok, p.body)
		b := call(t, p.method, p.ghost, tok, p.body)
		if a.Status != http.StatusNotFound || a.Status != b.Status || strip(a) != strip(b) {
			t.Errorf("%s: another account's answers %d %s, a nonexistent one %d %s; want the same 404", p.name, a.Status, a.Body, b.Status, b.Body)
		}
	}
	a := call(t, "POST", "/v1/documents/doc_x_"+other+"/rcm/opt-out", tok, map[string]any{"campaignId": theirs["id"], "channel": "all"})
	b := call(t, "POST", "/v1/documents/doc_x_"+other+"/rcm/opt-out", tok, map[string]any{"campaignId": "rcm_01k0b2z9y8x7w6v5u4t3s2r1q0", "channel": "all"})
	if a.Status != 404 || strip(a) != strip(b) {
		t.Errorf("opt-out: another account's campaign answers %d %s, a nonexistent one %d %s", a.Status, a.Body, b.Status, b.Body)
	}
	// And nothing changed for the owner.
	r := call(t, "GET", "/v1/documents/doc_x_"+other+"/rcm/"+theirs["id"].(string), otherTok, nil)
	if got := r.JSON(t)["campaign"].(map[string]any); got["active"] != true || len(got["optOuts"].([]any)) != 0 {
		t.Fatalf("the owner's campaign changed: %v", got)
	}
}

// TestTokenAttacks sends forged tokens through the running gateway.
func TestTokenAttacks(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	putDoc(t, "doc_jwt_"+acct, acct, "BEHIND", 1)
	path := "/v1/documents/doc_jwt_" + acct + "/rcm"
	claims := jwt.MapClaims{"sub": "user_x", "sid": "sess_x", "o": map[string]any{"id": acct}, "iss": stk.JWKS().Issuer(),
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	key := stk.JWKS().Key()

	none := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
		tok.Header["kid"] = key.ID
		s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}
	hsWithPublicKey := func() string {
		der, _ := x509.MarshalPKIXPublicKey(&key.Private.PublicKey)
		pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
		tok.Header["kid"] = key.ID
		s, _ := tok.SignedString(pemKey)
		return s
	}
	signed := func(k *rsa.PrivateKey, kid string, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, _ := tok.SignedString(k)
		return s
	}
	stranger, err := sessiontoken.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	wrongIssuer := jwt.MapClaims{}
	for k, v := range claims {
		wrongIssuer[k] = v
	}
	wrongIssuer["iss"] = "https://evil.example.com"
	valid := signed(key.Private, key.ID, claims)
	parts := strings.Split(valid, ".")
	tamperedClaims := jwt.MapClaims{}
	for k, v := range claims {
		tamperedClaims[k] = v
	}
	tamperedClaims["o"] = map[string]any{"id": "org_victim"}
	payload, _ := json.Marshal(tamperedClaims)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]

	tests := []struct {
		name string
		tok  string
	}{
		{"alg none", none()},
		{"HS256 signed with the public key", hsWithPublicKey()},
		{"missing kid", signed(key.Private, "", claims)},
		{"unknown kid", signed(stranger.Private, "kid_unknown", claims)},
		{"known kid, other key", signed(stranger.Private, key.ID, claims)},
		{"wrong issuer", signed(key.Private, key.ID, wrongIssuer)},
		{"claims changed after signing", tampered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call(t, "POST", path, tt.tok, startBody()).wantError(t, http.StatusUnauthorized, invalidToken)
		})
	}
	if r := call(t, "POST", path, valid, startBody()); r.Status != http.StatusCreated {
		t.Fatalf("the untampered token: got %d %s, want 201", r.Status, r.Body)
	}
}

// TestInternalServicesRefuseForgedPrincipals calls the campaign service
// directly, as an attacker inside the network would.
func TestInternalServicesRefuseForgedPrincipals(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	putDoc(t, "doc_forge_"+acct, acct, "BEHIND", 1)
	url := stk.URL("campaign") + "/v1/documents/doc_forge_" + acct + "/rcm"
	body := `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"c"}`
	wrongSecret, err := principal.NewSigner("an-attacker-guessed-this-secret-000000", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	right, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	p := principal.Principal{AccountID: acct, UserID: "user_x"}
	tests := []struct {
		name   string
		sign   func(r *http.Request)
		status int
	}{
		{"no principal", func(*http.Request) {}, http.StatusForbidden},
		{"client-made header", func(r *http.Request) {
			r.Header.Set(principal.Header, "v1."+base64.RawURLEncoding.EncodeToString([]byte(`{"acct":"`+acct+`","sub":"user_x","exp":9999999999}`))+".AAAA")
		}, http.StatusForbidden},
		{"signed with another secret", func(r *http.Request) { _ = wrongSecret.Sign(r, p) }, http.StatusForbidden},
		{"signed for another path", func(r *http.Request) {
			other, _ := http.NewRequest("POST", stk.URL("campaign")+"/v1/documents/doc_other/rcm", nil)
			_ = right.Sign(other, p)
			r.Header.Set(principal.Header, other.Header.Get(principal.Header))
		}, http.StatusForbidden},
		{"the gateway's signature", func(r *http.Request) { _ = right.Sign(r, p) }, http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			tt.sign(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

// TestBodiesThroughTheGateway covers the transport-level body rules.
func TestBodiesThroughTheGateway(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	putDoc(t, "doc_body_"+acct, acct, "BEHIND", 1)
	path := "/v1/documents/doc_body_" + acct + "/rcm"
	big := `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"c","pad":"` + strings.Repeat("a", 64<<10) + `"}`
	justUnder := `{"sms":true,"email":false,"call":false,"tone":"t","cadence":"c","pad":"` + strings.Repeat("a", 64<<10-100) + `"}`

	call(t, "POST", path, tok, big).wantError(t, http.StatusRequestEntityTooLarge, contract.MsgBodyTooLarge)
	call(t, "POST", path, "", big).wantError(t, http.StatusUnauthorized, missingToken)
	if r := call(t, "POST", path, tok, justUnder); r.Status != http.StatusCreated {
		t.Fatalf("a body just under 64 KiB: got %d %s, want 201", r.Status, r.Body)
	}
	call(t, "POST", path, tok, startBody(), "Content-Type", "text/plain").wantError(t, 400, invalidBody)
	call(t, "POST", path, tok, startBody(), "Content-Type", "").wantError(t, 400, invalidBody)
	call(t, "POST", path, tok, "\xff\xfe").wantError(t, 400, invalidBody)
	call(t, "POST", path, tok, `[1,2]`).wantError(t, 400, invalidBody)

	r := call(t, "POST", path, tok, map[string]any{"sms": false, "email": false, "call": true, "tone": "  " + strings.Repeat("é", 80) + "  ", "cadence": "weekly", "notes": "   "})
	if r.Status != http.StatusCreated {
		t.Fatalf("80 two-byte characters after trimming: got %d %s", r.Status, r.Body)
	}
	c := r.JSON(t)["campaign"].(map[string]any)
	if c["tone"] != strings.Repeat("é", 80) {
		t.Fatalf("got tone %q, want it trimmed", c["tone"])
	}
	if _, ok := c["notes"]; ok {
		t.Fatalf("whitespace-only notes were stored: %v", c["notes"])
	}
}

// TestStartAndOptOutPublishEvents runs the happy path and checks the
// events on the broker: each exactly once, in order, with CloudEvents
// headers and valid schemas (kafkarec.Decode checks both).
func TestStartAndOptOutPublishEvents(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_flow_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	log := newEventLog(t)

	body := startBody()
	body["notes"] = "  Borrower previously responded well to SMS outreach.  "
	c := startCampaign(t, tok, doc, body)
	id := c["id"].(string)
	if c["notes"] != "Borrower previously responded well to SMS outreach." || c["active"] != true ||
		!slices.Equal(anyStrings(c["activeChannels"]), []string{"sms", "email"}) || c["createdBy"] != "user_member_of_"+acct {
		t.Fatalf("got campaign %v", c)
	}
	optOuts := []map[string]any{
		{"campaignId": id, "channel": "sms", "notes": "Borrower requested removal from SMS list on 2026-04-27."},
		{"campaignId": id, "channel": "sms"},
		{"campaignId": id, "channel": "call"},
		{"campaignId": id, "channel": "all"},
		{"campaignId": id, "channel": "email", "notes": "after all"},
	}
	for _, o := range optOuts {
		r := call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, o)
		if r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != `{"ok":true}` {
			t.Fatalf("opt-out %v: got %d %s, want 200 {\"ok\":true}", o, r.Status, r.Body)
		}
	}
	got := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, tok, nil).JSON(t)["campaign"].(map[string]any)
	if got["active"] != false || len(got["activeChannels"].([]any)) != 0 || len(got["optOuts"].([]any)) != len(optOuts) {
		t.Fatalf("got %v, want inactive with %d opt-outs", got, len(optOuts))
	}

	evs := log.waitFor(t, acct, func(evs []events.Event) bool { return len(evs) >= 1+len(optOuts) })
	// Give a duplicate a moment to show up before counting.
	time.Sleep(500 * time.Millisecond)
	evs = append(evs, log.waitFor(t, acct, func([]events.Event) bool { return true })...)
	if want := append([]string{"campaign_started"}, slices.Repeat([]string{"opt_out"}, len(optOuts))...); !slices.Equal(types(evs), want) {
		t.Fatalf("got events %v, want %v", types(evs), want)
	}
	if evs[0].Campaign == nil || evs[0].Campaign.ID != id || evs[0].Actor.ID != "user_member_of_"+acct || evs[0].Actor.SessionID != "sess_e2e" {
		t.Fatalf("got start event %+v", evs[0])
	}
	wantChannels := []string{"sms", "sms", "call", "all", "email"}
	wantDeactivated := []bool{false, false, false, true, false}
	for i, e := range evs[1:] {
		if e.Channel != wantChannels[i] || *e.Deactivated != wantDeactivated[i] || e.CampaignID != id || e.DocumentID != doc {
			t.Errorf("opt-out %d: got %+v, want channel %s deactivated %v", i, e, wantChannels[i], wantDeactivated[i])
		}
	}
	if evs[1].Notes != "Borrower requested removal from SMS list on 2026-04-27." {
		t.Errorf("got notes %q", evs[1].Notes)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].EventID <= evs[i-1].EventID {
			t.Errorf("event ids out of order: %s after %s", evs[i].EventID, evs[i-1].EventID)
		}
	}
}

func anyStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestConcurrentOptOutsThroughTheGateway: many opt-outs on one campaign at
// once, different channels and repeats; none is lost, in the campaign or
// on the broker.
func TestConcurrentOptOutsThroughTheGateway(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_conc_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	log := newEventLog(t)
	id := startCampaign(t, tok, doc, map[string]any{"sms": true, "email": true, "call": true, "tone": "t", "cadence": "c"})["id"].(string)
	channels := []string{"sms", "email", "call", "sms", "email", "all"}
	const rounds = 6
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for i := 0; i < rounds; i++ {
		for _, ch := range channels {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": id, "channel": ch})
				if r.Status == http.StatusOK {
					mu.Lock()
					accepted++
					mu.Unlock()
				} else {
					t.Errorf("opt-out %s: got %d %s", ch, r.Status, r.Body)
				}
			}()
		}
	}
	wg.Wait()
	c := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, tok, nil).JSON(t)["campaign"].(map[string]any)
	if n := len(c["optOuts"].([]any)); n != accepted || accepted != rounds*len(channels) {
		t.Fatalf("campaign holds %d opt-outs, %d were accepted of %d sent", n, accepted, rounds*len(channels))
	}
	evs := log.waitFor(t, acct, func(evs []events.Event) bool { return len(evs) >= 1+accepted })
	time.Sleep(500 * time.Millisecond)
	evs = append(evs, log.waitFor(t, acct, func([]events.Event) bool { return true })...)
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.EventID] {
			t.Errorf("event %s published twice", e.EventID)
		}
		seen[e.EventID] = true
	}
	if len(evs) != 1+accepted {
		t.Fatalf("got %d events, want %d (1 start + %d opt-outs)", len(evs), 1+accepted, accepted)
	}
}

// TestLoanLeavingBehindEndsCampaigns: a document turning CURRENT ends its
// active campaigns, a tombstone ends them as loan_removed, and campaigns
// already inactive are left alone.
func TestLoanLeavingBehindEndsCampaigns(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc, gone := "doc_end_"+acct, "doc_gone_"+acct
	putDoc(t, doc, acct, "BEHIND", 1)
	putDoc(t, gone, acct, "BEHIND", 1)
	log := newEventLog(t)
	a := startCampaign(t, tok, doc, startBody())["id"].(string)
	b := startCampaign(t, tok, doc, startBody())["id"].(string)
	// Stopped by opting out of its only channel, which also revokes sms
	// on the document, and only sms: the start at the end needs email.
	smsOnly := startBody()
	smsOnly["email"] = false
	stopped := startCampaign(t, tok, doc, smsOnly)["id"].(string)
	call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": stopped, "channel": "sms"})
	g := startCampaign(t, tok, gone, startBody())["id"].(string)

	putDoc(t, doc, acct, "CURRENT", 2)
	putDoc(t, doc, acct, "CURRENT", 2) // a redelivery changes nothing
	ctx := t.Context()
	if err := stk.DeleteDocument(ctx, gone); err != nil {
		t.Fatal(err)
	}
	evs := log.waitFor(t, acct, func(evs []events.Event) bool {
		n := 0
		for _, e := range evs {
			if e.EventType == events.TypeCampaignEnded {
				n++
			}
		}
		return n >= 3
	})
	time.Sleep(500 * time.Millisecond)
	evs = append(evs, log.waitFor(t, acct, func([]events.Event) bool { return true })...)
	ended := map[string]string{}
	for _, e := range evs {
		if e.EventType != events.TypeCampaignEnded {
			continue
		}
		if _, dup := ended[e.CampaignID]; dup {
			t.Errorf("campaign %s ended twice", e.CampaignID)
		}
		ended[e.CampaignID] = e.Reason
		if e.Actor.Type != events.ActorSystem {
			t.Errorf("got actor %+v, want the system", e.Actor)
		}
	}
	want := map[string]string{a: events.ReasonLoanCurrent, b: events.ReasonLoanCurrent, g: events.ReasonLoanRemoved}
	if len(ended) != len(want) {
		t.Fatalf("got ended %v, want %v", ended, want)
	}
	for id, reason := range want {
		if ended[id] != reason {
			t.Errorf("campaign %s: got reason %q, want %q", id, ended[id], reason)
		}
	}
	c := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+a, tok, nil).JSON(t)["campaign"].(map[string]any)
	if c["active"] != false || c["endReason"] != "loan_current" || c["endedAt"] == nil {
		t.Fatalf("got %v, want ended with loan_current", c)
	}
	// No new campaign on the CURRENT document; the deleted one is gone, but
	// its campaigns stay listed for the record.
	call(t, "POST", "/v1/documents/"+doc+"/rcm", tok, startBody()).wantError(t, 400, loanRule)
	call(t, "POST", "/v1/documents/"+gone+"/rcm", tok, startBody()).wantError(t, 404, notFound)
	if l := call(t, "GET", "/v1/documents/"+gone+"/rcm", tok, nil); l.Status != 200 || len(l.JSON(t)["campaigns"].([]any)) != 1 {
		t.Fatalf("deleted document's campaigns: got %d %s", l.Status, l.Body)
	}
	// Back to BEHIND: a new campaign may start.
	putDoc(t, doc, acct, "BEHIND", 3)
	startCampaign(t, tok, doc, startBody())
}

// TestListCampaignsNewestFirst pages through a document's campaigns.
func TestListCampaignsNewestFirst(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "user")
	tok := token(t, acct)
	doc := "doc_list_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	var made []string
	for i := 0; i < 5; i++ {
		made = append(made, startCampaign(t, tok, doc, startBody())["id"].(string))
	}
	slices.Reverse(made)
	var got []string
	path := "/v1/documents/" + doc + "/rcm?limit=2"
	for i := 0; i < 5; i++ {
		page := call(t, "GET", path, tok, nil).JSON(t)
		for _, c := range page["campaigns"].([]any) {
			got = append(got, c.(map[string]any)["id"].(string))
		}
		next, _ := page["nextCursor"].(string)
		if next == "" {
			break
		}
		path = "/v1/documents/" + doc + "/rcm?limit=2&cursor=" + next
	}
	if !slices.Equal(got, made) {
		t.Fatalf("got %v, want %v", got, made)
	}
}
