package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
)

// script runs a mixed sequence of actions on two accounts, interleaved,
// through the gateway, and returns each account's expected events as
// "type:campaignId" in acceptance order. between runs after each step.
func script(t *testing.T, accounts [2]string, toks [2]string, between func(step int)) [2][]string {
	t.Helper()
	var want [2][]string
	type state struct{ d1, d2, c1, c2, c3 string }
	var st [2]state
	for i, a := range accounts {
		st[i] = state{d1: "doc_s1_" + a, d2: "doc_s2_" + a}
		putDoc(t, st[i].d1, a, "BEHIND", 1)
		putDoc(t, st[i].d2, a, "BEHIND", 1)
	}
	optOut := func(i int, doc, id, ch string) {
		t.Helper()
		r := call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", toks[i], map[string]any{"campaignId": id, "channel": ch, "notes": "step " + ch})
		if r.Status != http.StatusOK {
			t.Fatalf("opt-out: %d %s", r.Status, r.Body)
		}
		want[i] = append(want[i], "opt_out:"+id)
	}
	start := func(i int, doc string) string {
		t.Helper()
		id := startCampaign(t, toks[i], doc, map[string]any{"sms": true, "email": true, "call": true, "tone": "firm", "cadence": "weekly"})["id"].(string)
		want[i] = append(want[i], "campaign_started:"+id)
		return id
	}
	steps := []func(i int){
		func(i int) { st[i].c1 = start(i, st[i].d1) },
		func(i int) { optOut(i, st[i].d1, st[i].c1, "sms") },
		func(i int) { st[i].c2 = start(i, st[i].d1) },
		func(i int) { optOut(i, st[i].d1, st[i].c1, "email") },
		func(i int) { st[i].c3 = start(i, st[i].d2) },
		func(i int) { optOut(i, st[i].d1, st[i].c2, "all") },
		func(i int) { optOut(i, st[i].d1, st[i].c2, "sms") }, // on an inactive campaign: still recorded
		func(i int) {
			putDoc(t, st[i].d1, accounts[i], "CURRENT", 2) // ends c1 only: c2 is inactive
			want[i] = append(want[i], "campaign_ended:"+st[i].c1)
		},
		func(i int) { optOut(i, st[i].d2, st[i].c3, "call") },
		func(i int) {
			putDoc(t, st[i].d2, accounts[i], "", 2) // the loan is removed
			want[i] = append(want[i], "campaign_ended:"+st[i].c3)
		},
		func(i int) {
			call(t, "POST", "/v1/documents/"+st[i].d1+"/rcm", toks[i], startBody()).wantError(t, 400, loanRule)
		},
	}
	for n, step := range steps {
		for i := range accounts {
			step(i)
		}
		if between != nil {
			between(n)
		}
	}
	return want
}

// checkOutcome checks, for each account, the compliance log, the activity
// history and what its SSE subscriber received against want.
func checkOutcome(t *testing.T, toks [2]string, subs [2]*subscriber, want [2][]string) {
	t.Helper()
	for i := range toks {
		entries := waitLog(t, toks[i], len(want[i]))
		var got []string
		var ids []string
		for _, e := range entries {
			got = append(got, e.EventType+":"+e.CampaignID)
			ids = append(ids, e.EventID)
		}
		if !slices.Equal(got, want[i]) {
			t.Fatalf("account %d: compliance log\n got %v\nwant %v", i, got, want[i])
		}
		if v := verifyLog(t, toks[i]); !v.OK || v.HeadSeq != int64(len(want[i])) {
			t.Fatalf("account %d: verify %+v", i, v)
		}
		var history []string
		eventually(t, time.Minute, "the activity history", func() bool {
			history = history[:0]
			for _, it := range activity(t, toks[i]) {
				history = append(history, it.ID)
			}
			return len(history) >= len(ids)
		})
		slices.Reverse(history)
		if !slices.Equal(history, ids) {
			t.Fatalf("account %d: activity history\n got %v\nwant %v", i, history, ids)
		}
		live := subs[i].waitItems(t, len(ids))
		time.Sleep(300 * time.Millisecond) // a duplicate would show up by now
		live = subs[i].received()
		var liveIDs []string
		for _, it := range live {
			liveIDs = append(liveIDs, it.ID)
			if !strings.HasPrefix(it.DocumentID, "doc_s") || it.Summary == "" {
				t.Errorf("account %d: item %+v", i, it)
			}
		}
		if !slices.Equal(liveIDs, ids) {
			t.Fatalf("account %d: SSE subscriber received\n %v\nwant\n %v", i, liveIDs, ids)
		}
	}
}

// TestScriptAcrossTwoAccounts: the mixed script; each account's log,
// history and live stream hold exactly its own actions, in order.
func TestScriptAcrossTwoAccounts(t *testing.T) {
	t.Parallel()
	accounts := [2]string{newAccount(t, "org"), newAccount(t, "user")}
	toks := [2]string{token(t, accounts[0]), token(t, accounts[1])}
	subs := [2]*subscriber{subscribe(t, toks[0]), subscribe(t, toks[1])}
	want := script(t, accounts, toks, nil)
	checkOutcome(t, toks, subs, want)
}

// TestScriptSurvivesKilledConsumers: the same script, with the compliance
// and feed processes killed (SIGKILL) in the middle of it and started
// again later: nothing lost, nothing twice, chains valid. Subscribers
// reconnect with Last-Event-ID, as EventSource does. It kills shared
// processes, so it does not run in parallel.
func TestScriptSurvivesKilledConsumers(t *testing.T) {
	accounts := [2]string{newAccount(t, "org"), newAccount(t, "org")}
	toks := [2]string{token(t, accounts[0]), token(t, accounts[1])}
	subs := [2]*subscriber{subscribe(t, toks[0]), subscribe(t, toks[1])}
	want := script(t, accounts, toks, func(step int) {
		switch step {
		case 3:
			for _, name := range []string{stack.Compliance, stack.Feed} {
				if err := stk.Process(name).Kill(); err != nil {
					t.Fatal(err)
				}
			}
		case 6:
			for _, name := range []string{stack.Compliance, stack.Feed} {
				if err := stk.Process(name).Start(t.Context()); err != nil {
					t.Fatal(fmt.Errorf("restart %s: %w", name, err))
				}
			}
		case 8:
			// And once more, right after a burst, without waiting.
			if err := stk.Process(stack.Compliance).Kill(); err != nil {
				t.Fatal(err)
			}
			if err := stk.Process(stack.Compliance).Start(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	})
	checkOutcome(t, toks, subs, want)
	for i, s := range subs {
		s.mu.Lock()
		if s.connects < 2 {
			t.Errorf("subscriber %d connected %d times; the feed's death should have made it reconnect", i, s.connects)
		}
		s.mu.Unlock()
	}
}
