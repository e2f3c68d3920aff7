package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
)

// These tests take shared servers and processes away: not parallel.

// TestBrokerOutage: with the broker stopped, starts and opt-outs are still
// accepted (the outbox holds their events); once it returns, every event
// is published, appended to the compliance log once and delivered to the
// feed once.
func TestBrokerOutage(t *testing.T) {
	acct := newAccount(t, "org")
	tok := token(t, acct)
	// One document per campaign: an opt-out of all revokes every channel
	// on its document, and a start of revoked channels only is refused.
	docs := make([]string, 5)
	for i := range docs {
		docs[i] = fmt.Sprintf("doc_outage_%s_%d", acct, i)
		putDoc(t, docs[i], acct, "BEHIND", 1)
	}
	sub := subscribe(t, tok)

	stk.StopKafka()
	back := false
	t.Cleanup(func() {
		if !back {
			_ = stk.StartKafka(context.Background())
		}
	})
	var want []string
	const starts, optOutsEach = 5, 3
	sent, accepted := 0, 0
	for i := 0; i < starts; i++ {
		sent++
		doc := docs[i]
		id := startCampaign(t, tok, doc, startBody())["id"].(string)
		accepted++
		want = append(want, "campaign_started:"+id)
		for j, ch := range []string{"sms", "call", "all"}[:optOutsEach] {
			sent++
			r := call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": id, "channel": ch, "notes": fmt.Sprint(j)})
			if r.Status != http.StatusOK {
				t.Fatalf("opt-out with the broker down: %d %s", r.Status, r.Body)
			}
			accepted++
			want = append(want, "opt_out:"+id)
		}
	}
	if err := stk.StartKafka(context.Background()); err != nil {
		t.Fatal(err)
	}
	back = true
	entries := waitLog(t, tok, len(want))
	time.Sleep(time.Second) // anything twice would have arrived by now
	entries = logEntries(t, tok, "")
	var got []string
	for _, e := range entries {
		got = append(got, e.EventType+":"+e.CampaignID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("compliance log after the outage\n got %v\nwant %v", got, want)
	}
	if v := verifyLog(t, tok); !v.OK {
		t.Fatalf("verify: %+v", v)
	}
	live := sub.waitItems(t, len(want))
	time.Sleep(300 * time.Millisecond)
	live = sub.received()
	dups := len(live) - len(want)
	if dups != 0 || len(activity(t, tok)) != len(want) {
		t.Fatalf("feed: %d live items and %d in history, want %d each", len(live), len(activity(t, tok)), len(want))
	}
	figure(t, "broker down: sent %d, accepted %d; after it returned: appended %d, delivered live %d, duplicates %d, lost %d",
		sent, accepted, len(entries), len(live), dups, accepted-len(entries))
}

// TestStoreOutage: with MongoDB stopped, commands answer 503 with
// Retry-After and a clear error, nothing is half-written, and the service
// recovers by itself when the store returns.
func TestStoreOutage(t *testing.T) {
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_store_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	id := startCampaign(t, tok, doc, startBody())["id"].(string)
	waitLog(t, tok, 1)

	stk.StopMongo()
	back := false
	t.Cleanup(func() {
		if !back {
			_ = stk.StartMongo(context.Background())
		}
	})
	refused := 0
	for _, req := range []struct {
		path string
		body any
	}{
		{"/v1/documents/" + doc + "/rcm", startBody()},
		{"/v1/documents/" + doc + "/rcm/opt-out", map[string]any{"campaignId": id, "channel": "sms"}},
	} {
		r := call(t, "POST", req.path, tok, req.body)
		r.wantError(t, http.StatusServiceUnavailable, "Service temporarily unavailable. Retry later.")
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", req.path)
		}
		refused++
	}
	if err := stk.StartMongo(context.Background()); err != nil {
		t.Fatal(err)
	}
	back = true
	// It recovers by itself: the same requests now succeed.
	eventually(t, 30*time.Second, "the campaign service to recover", func() bool {
		r := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, tok, nil)
		return r.Status == http.StatusOK
	})
	c := call(t, "GET", "/v1/documents/"+doc+"/rcm/"+id, tok, nil).JSON(t)["campaign"].(map[string]any)
	if len(c["optOuts"].([]any)) != 0 {
		t.Fatalf("a refused opt-out was written: %v", c["optOuts"])
	}
	if l := call(t, "GET", "/v1/documents/"+doc+"/rcm", tok, nil).JSON(t)["campaigns"].([]any); len(l) != 1 {
		t.Fatalf("a refused start was written: %d campaigns", len(l))
	}
	if r := call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": id, "channel": "sms"}); r.Status != http.StatusOK {
		t.Fatalf("after recovery: %d %s", r.Status, r.Body)
	}
	entries := waitLog(t, tok, 2)
	time.Sleep(500 * time.Millisecond)
	entries = logEntries(t, tok, "")
	if len(entries) != 2 {
		t.Fatalf("got %d log entries, want 2 (the refused requests recorded nothing)", len(entries))
	}
	figure(t, "store down: refused %d with 503 and Retry-After, half-written 0; after it returned: accepted 1, log entries %d", refused, len(entries))
}

// TestConsumersKilledUnderLoad: a steady stream of requests from several
// accounts while compliance and feed are SIGKILLed and restarted again and
// again; the final compliance log equals the accepted actions exactly:
// count, order per account, valid chains.
func TestConsumersKilledUnderLoad(t *testing.T) {
	const accounts, perAccount = 4, 25
	type acc struct {
		id, tok, doc string
		campaign     string
		want         []string
	}
	as := make([]*acc, accounts)
	for i := range as {
		a := &acc{id: newAccount(t, "org")}
		a.tok, a.doc = token(t, a.id), "doc_kill_"+a.id
		putDoc(t, a.doc, a.id, "BEHIND", 1)
		as[i] = a
	}
	var sent, accepted atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for _, a := range as {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < perAccount && ctx.Err() == nil; n++ {
				sent.Add(1)
				if n%5 == 0 {
					r := call(t, "POST", "/v1/documents/"+a.doc+"/rcm", a.tok, startBody())
					if r.Status != http.StatusCreated {
						t.Errorf("start: %d %s", r.Status, r.Body)
						continue
					}
					a.campaign = r.JSON(t)["campaign"].(map[string]any)["id"].(string)
					a.want = append(a.want, "campaign_started:"+a.campaign)
				} else {
					r := call(t, "POST", "/v1/documents/"+a.doc+"/rcm/opt-out", a.tok, map[string]any{"campaignId": a.campaign, "channel": "email"})
					if r.Status != http.StatusOK {
						t.Errorf("opt-out: %d %s", r.Status, r.Body)
						continue
					}
					a.want = append(a.want, "opt_out:"+a.campaign)
				}
				accepted.Add(1)
				time.Sleep(20 * time.Millisecond) // a steady stream, not a burst
			}
		}()
	}
	kills := 0
	for round := 0; round < 4; round++ {
		time.Sleep(300 * time.Millisecond)
		for _, name := range []string{stack.Compliance, stack.Feed} {
			if err := stk.Process(name).Kill(); err != nil {
				t.Fatal(err)
			}
			kills++
		}
		for _, name := range []string{stack.Compliance, stack.Feed} {
			if err := stk.Process(name).Start(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	appended, dups := 0, 0
	for _, a := range as {
		entries := waitLog(t, a.tok, len(a.want))
		time.Sleep(200 * time.Millisecond)
		entries = logEntries(t, a.tok, "")
		var got []string
		seen := map[string]bool{}
		for _, e := range entries {
			got = append(got, e.EventType+":"+e.CampaignID)
			if seen[e.EventID] {
				dups++
			}
			seen[e.EventID] = true
		}
		appended += len(entries)
		if !slices.Equal(got, a.want) {
			t.Errorf("account %s: log\n got %v\nwant %v", a.id, got, a.want)
		}
		if v := verifyLog(t, a.tok); !v.OK || v.HeadSeq != int64(len(a.want)) {
			t.Errorf("account %s: verify %+v", a.id, v)
		}
	}
	figure(t, "consumers SIGKILLed %d times under load: sent %d, accepted %d, appended %d, duplicates %d, lost %d",
		kills, sent.Load(), accepted.Load(), appended, dups, int(accepted.Load())-appended)
}
