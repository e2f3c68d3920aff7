package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rcm-platform/rcm/dev/stack"
)

// TestDevPage: the stack serves the page on a port of its own; a token
// it mints for a user authenticates at the gateway, and the gateway lets
// the page's origin call it (the preflight of a ticket's mint, and the
// answer itself, carry the page's origin).
func TestDevPage(t *testing.T) {
	t.Parallel()
	page := stk.URL(stack.Page)
	for path, want := range map[string]string{"/": "<title>RCM", "/app.js": "stream-tickets", "/config.json": `"gatewayURL":"` + stk.GatewayURL() + `"`} {
		resp, err := http.Get(page + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("page %s: got %d, want 200 with %q in %.200s", path, resp.StatusCode, want, body)
		}
	}
	resp, err := http.Post(page+"/token", "application/json", strings.NewReader(`{"sub":"`+newAccount(t, "user")+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	var minted struct{ Token string }
	err = json.NewDecoder(resp.Body).Decode(&minted)
	resp.Body.Close()
	if err != nil || minted.Token == "" {
		t.Fatalf("page token: %v, %+v", err, minted)
	}

	pre, err := http.NewRequest("OPTIONS", stk.GatewayURL()+"/v1/activity/stream-tickets", nil)
	if err != nil {
		t.Fatal(err)
	}
	pre.Header.Set("Origin", page)
	pre.Header.Set("Access-Control-Request-Method", "POST")
	pre.Header.Set("Access-Control-Request-Headers", "authorization")
	presp, err := http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	presp.Body.Close()
	if got := presp.Header.Get("Access-Control-Allow-Origin"); presp.StatusCode != http.StatusNoContent || got != page {
		t.Errorf("preflight from the page: got %d, Access-Control-Allow-Origin %q, want 204 and %q", presp.StatusCode, got, page)
	}
	r := call(t, "POST", "/v1/activity/stream-tickets", minted.Token, nil, "Origin", page)
	if r.Status != http.StatusCreated || r.Header.Get("Access-Control-Allow-Origin") != page {
		t.Errorf("mint from the page: got %d %s, Access-Control-Allow-Origin %q, want 201 and %q", r.Status, r.Body, r.Header.Get("Access-Control-Allow-Origin"), page)
	}
}
