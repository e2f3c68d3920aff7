package e2e

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIdempotencyKey: the same key from the same account returns the first
// answer without a second action, also when the duplicates arrive at once;
// the same key with another body is refused; other accounts' keys are
// their own.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	acct, other := newAccount(t, "org"), newAccount(t, "org")
	tok, otherTok := token(t, acct), token(t, other)
	doc := "doc_idem_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	putDoc(t, "doc_idem_"+other, other, "BEHIND", 1)
	path := "/v1/documents/" + doc + "/rcm"

	first := call(t, "POST", path, tok, startBody(), "Idempotency-Key", "start-1")
	if first.Status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	id := first.JSON(t)["campaign"].(map[string]any)["id"]
	again := call(t, "POST", path, tok, startBody(), "Idempotency-Key", "start-1")
	if again.Status != http.StatusCreated || again.JSON(t)["campaign"].(map[string]any)["id"] != id || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: got %d %s (replayed %q), want the first answer", again.Status, again.Body, again.Header.Get("Idempotent-Replayed"))
	}
	changed := startBody()
	changed["tone"] = "different"
	call(t, "POST", path, tok, changed, "Idempotency-Key", "start-1").wantError(t, http.StatusUnprocessableEntity, "Idempotency-Key already used with a different request.")
	// The same key in another account is another request.
	if r := call(t, "POST", "/v1/documents/doc_idem_"+other+"/rcm", otherTok, startBody(), "Idempotency-Key", "start-1"); r.Status != http.StatusCreated || r.JSON(t)["campaign"].(map[string]any)["id"] == id {
		t.Fatalf("other account: got %d %s", r.Status, r.Body)
	}
	call(t, "POST", path, tok, startBody(), "Idempotency-Key", "bad key with spaces").wantError(t, 400, "Invalid Idempotency-Key header.")

	// Ten identical requests at once: one campaign.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[any]int{}
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := call(t, "POST", path, tok, startBody(), "Idempotency-Key", "start-burst")
			if r.Status != http.StatusCreated {
				t.Errorf("burst: %d %s", r.Status, r.Body)
				return
			}
			mu.Lock()
			ids[r.JSON(t)["campaign"].(map[string]any)["id"]]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(ids) != 1 {
		t.Fatalf("a burst of one key made campaigns %v, want one", ids)
	}
	var burstID string
	for k := range ids {
		burstID = k.(string)
	}

	// Opt-outs: twice with one key, once with another.
	opt := map[string]any{"campaignId": id, "channel": "sms"}
	for i := 0; i < 3; i++ {
		if r := call(t, "POST", path+"/opt-out", tok, opt, "Idempotency-Key", "opt-1"); r.Status != http.StatusOK {
			t.Fatalf("opt-out %d: %d %s", i, r.Status, r.Body)
		}
	}
	call(t, "POST", path+"/opt-out", tok, map[string]any{"campaignId": id, "channel": "email"}, "Idempotency-Key", "opt-1").wantError(t, 422, "Idempotency-Key already used with a different request.")
	if r := call(t, "POST", path+"/opt-out", tok, opt, "Idempotency-Key", "opt-2"); r.Status != http.StatusOK {
		t.Fatalf("opt-out with a second key: %d %s", r.Status, r.Body)
	}
	// A refusal is remembered too: the same key answers the same 404.
	ghost := map[string]any{"campaignId": "rcm_01k0b2z9y8x7w6v5u4t3s2r1q0", "channel": "sms"}
	call(t, "POST", path+"/opt-out", tok, ghost, "Idempotency-Key", "opt-ghost").wantError(t, 404, campaignNotFound)
	if r := call(t, "POST", path+"/opt-out", tok, ghost, "Idempotency-Key", "opt-ghost"); r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the refusal was not replayed: %d %s", r.Status, r.Body)
	}

	// The compliance log holds each action once: two starts, two opt-outs.
	entries := waitLog(t, tok, 4)
	time.Sleep(300 * time.Millisecond)
	entries = logEntries(t, tok, "")
	var got []string
	for _, e := range entries {
		got = append(got, e.EventType+":"+e.CampaignID)
	}
	want := []string{"campaign_started:" + id.(string), "campaign_started:" + burstID, "opt_out:" + id.(string), "opt_out:" + id.(string)}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("compliance log\n got %v\nwant %v", got, want)
	}
}
