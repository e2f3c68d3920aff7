package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/seqlog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// logEntries reads an account's whole compliance log through the gateway,
// oldest first, following nextCursor.
func logEntries(t *testing.T, tok, query string) []auditlog.Entry {
	t.Helper()
	var out []auditlog.Entry
	path := "/v1/compliance-log?order=asc&limit=3" + query
	for i := 0; i < 100; i++ {
		r := call(t, "GET", path, tok, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		var page struct {
			Entries    []auditlog.Entry `json:"entries"`
			NextCursor string           `json:"nextCursor"`
		}
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Entries...)
		if page.NextCursor == "" {
			return out
		}
		path = "/v1/compliance-log?order=asc&limit=3" + query + "&cursor=" + page.NextCursor
	}
	t.Fatal("too many pages")
	return nil
}

// waitLog polls until the account's log holds n entries.
func waitLog(t *testing.T, tok string, n int) []auditlog.Entry {
	t.Helper()
	var got []auditlog.Entry
	eventually(t, time.Minute, fmt.Sprintf("%d log entries", n), func() bool {
		got = logEntries(t, tok, "")
		return len(got) >= n
	})
	return got
}

type verifyAnswer struct {
	OK             bool   `json:"ok"`
	Entries        int64  `json:"entries"`
	HeadSeq        int64  `json:"headSeq"`
	HeadHash       string `json:"headHash"`
	FirstBrokenSeq *int64 `json:"firstBrokenSeq"`
}

func verifyLog(t *testing.T, tok string) verifyAnswer {
	t.Helper()
	r := call(t, "GET", "/v1/compliance-log/verify", tok, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("verify: %d %s", r.Status, r.Body)
	}
	var v verifyAnswer
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestComplianceLogRecordsEveryAction runs a mixed script on two accounts
// and reads each account's log back: exactly its actions, in order, and a
// chain that verifies.
func TestComplianceLogRecordsEveryAction(t *testing.T) {
	t.Parallel()
	a, b := newAccount(t, "org"), newAccount(t, "user")
	ta, tb := token(t, a), token(t, b)
	putDoc(t, "doc_cl_"+a, a, "BEHIND", 1)
	putDoc(t, "doc_cl_"+b, b, "BEHIND", 1)
	var wantA, wantB []string
	ca := startCampaign(t, ta, "doc_cl_"+a, startBody())["id"].(string)
	wantA = append(wantA, "campaign_started:"+ca)
	cb := startCampaign(t, tb, "doc_cl_"+b, startBody())["id"].(string)
	wantB = append(wantB, "campaign_started:"+cb)
	for _, ch := range []string{"sms", "sms", "all", "email"} {
		call(t, "POST", "/v1/documents/doc_cl_"+a+"/rcm/opt-out", ta, map[string]any{"campaignId": ca, "channel": ch, "notes": "asked: " + ch})
		wantA = append(wantA, "opt_out:"+ca)
	}
	cb2 := startCampaign(t, tb, "doc_cl_"+b, startBody())["id"].(string)
	wantB = append(wantB, "campaign_started:"+cb2)
	call(t, "POST", "/v1/documents/doc_cl_"+b+"/rcm/opt-out", tb, map[string]any{"campaignId": cb, "channel": "call"})
	wantB = append(wantB, "opt_out:"+cb)
	putDoc(t, "doc_cl_"+b, b, "CURRENT", 2)
	// Both of b's campaigns were active: both end, in campaign order.
	wantB = append(wantB, "campaign_ended:?", "campaign_ended:?")

	check := func(tok string, want []string) []auditlog.Entry {
		got := waitLog(t, tok, len(want))
		time.Sleep(300 * time.Millisecond) // nothing more arrives
		got = logEntries(t, tok, "")
		if len(got) != len(want) {
			t.Fatalf("got %d entries, want %d", len(got), len(want))
		}
		for i, e := range got {
			w := strings.Split(want[i], ":")
			if e.Seq != int64(i+1) || e.EventType != w[0] || (w[1] != "?" && e.CampaignID != w[1]) {
				t.Errorf("entry %d: got seq %d %s %s, want %s", i, e.Seq, e.EventType, e.CampaignID, want[i])
			}
		}
		v := verifyLog(t, tok)
		if !v.OK || v.HeadSeq != int64(len(want)) || v.Entries != int64(len(want)) || v.HeadHash != got[len(got)-1].Hash {
			t.Fatalf("verify: got %+v", v)
		}
		return got
	}
	gotA := check(ta, wantA)
	gotB := check(tb, wantB)
	if gotA[1].Actor.ID != "user_member_of_"+a || gotB[2].Actor.Type != "user" || gotB[3].Actor.Type != "system" || gotB[4].Actor.Type != "system" {
		t.Errorf("actors: got %+v / %+v / %+v", gotA[1].Actor, gotB[2].Actor, gotB[3].Actor)
	}
	var data map[string]any
	if err := json.Unmarshal(gotA[1].Data, &data); err != nil || data["notes"] != "asked: sms" {
		t.Errorf("entry data: %s", gotA[1].Data)
	}
	// Filters and newest-first.
	if got := logEntries(t, ta, "&eventType=opt_out"); len(got) != 4 {
		t.Errorf("eventType filter: got %d entries, want 4", len(got))
	}
	if got := logEntries(t, tb, "&campaignId="+cb2); len(got) != 2 || got[0].EventType != "campaign_started" {
		t.Errorf("campaignId filter: got %v", got)
	}
	if got := logEntries(t, tb, "&documentId=doc_elsewhere"); len(got) != 0 {
		t.Errorf("documentId filter: got %d entries, want 0", len(got))
	}
	r := call(t, "GET", "/v1/compliance-log?limit=2", ta, nil)
	var page struct {
		Entries []auditlog.Entry `json:"entries"`
	}
	_ = json.Unmarshal(r.Body, &page)
	if len(page.Entries) != 2 || page.Entries[0].Seq != 5 || page.Entries[1].Seq != 4 {
		t.Errorf("newest first: got %+v", page.Entries)
	}
	call(t, "GET", "/v1/compliance-log?order=sideways", ta, nil).wantError(t, 400, "Invalid query parameter.")
	call(t, "GET", "/v1/compliance-log?eventType=deleted", ta, nil).wantError(t, 400, "Invalid query parameter.")
	call(t, "GET", "/v1/compliance-log", "", nil).wantError(t, 401, missingToken)
}

// TestTamperedLogIsCaught exports a log, re-verifies it offline with both
// rcmctl and the auditor's Python script, then edits, deletes and reorders
// entries in the database and in the file: every verifier names the first
// broken seq.
func TestTamperedLogIsCaught(t *testing.T) {
	t.Parallel()
	acct := newAccount(t, "org")
	tok := token(t, acct)
	doc := "doc_tamper_" + acct
	putDoc(t, doc, acct, "BEHIND", 1)
	id := startCampaign(t, tok, doc, startBody())["id"].(string)
	for _, ch := range []string{"sms", "email", "call", "sms", "all"} {
		call(t, "POST", "/v1/documents/"+doc+"/rcm/opt-out", tok, map[string]any{"campaignId": id, "channel": ch, "notes": "n\u00b0 \"" + ch + "\" 😀"})
	}
	waitLog(t, tok, 6)
	eventually(t, 30*time.Second, "a checkpoint of the 6 entries", func() bool {
		r := call(t, "GET", "/v1/compliance-log/checkpoint", tok, nil)
		lines := strings.Split(string(r.Body), "\n")
		return r.Status == 200 && len(lines) > 1 && lines[1] == "6"
	})

	dir := t.TempDir()
	export := func(name string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		cmd := exec.Command(filepath.Join(binDir, "rcmctl"), "log", "export", "--account", acct, "--out", path,
			"--gateway", stk.GatewayURL(), "--token", tok)
		cmd.Env = append(os.Environ(), "RCM_MONGODB_URI="+stk.MongoURI())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("export: %v\n%s", err, out)
		}
		return path
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "docs", "verify_log.py")
	verifiers := map[string]func(path string) (string, error){
		"rcmctl": func(path string) (string, error) {
			out, err := exec.Command(filepath.Join(binDir, "rcmctl"), "log", "verify", path).CombinedOutput()
			return string(out), err
		},
		"python": func(path string) (string, error) {
			out, err := exec.Command("python3", script, path).CombinedOutput()
			return string(out), err
		},
	}
	expect := func(path string, broken int64) {
		t.Helper()
		for name, verify := range verifiers {
			out, err := verify(path)
			switch {
			case broken == 0 && err != nil:
				t.Errorf("%s on %s: %v\n%s", name, filepath.Base(path), err, out)
			case broken != 0 && err == nil:
				t.Errorf("%s on %s: passed, want broken at %d\n%s", name, filepath.Base(path), broken, out)
			case broken != 0 && !strings.Contains(out, fmt.Sprintf("BROKEN at seq %d", broken)) && !strings.Contains(out, fmt.Sprintf(`"firstBrokenSeq":%d`, broken)):
				t.Errorf("%s on %s: got %s, want broken at %d", name, filepath.Base(path), out, broken)
			}
		}
	}
	clean := export("clean.jsonl")
	expect(clean, 0)
	// With the account's verifier key, both check the checkpoint written
	// beside the export too.
	vkey := call(t, "GET", "/v1/compliance-log/verifier-key", tok, nil)
	if vkey.Status != 200 {
		t.Fatalf("verifier key: %d %s", vkey.Status, vkey.Body)
	}
	key := strings.TrimSpace(string(vkey.Body))
	for name, tc := range map[string]struct {
		cmd  *exec.Cmd
		want string
	}{
		"rcmctl": {exec.Command(filepath.Join(binDir, "rcmctl"), "log", "verify", clean, "--key", key), `"consistent":true`},
		"python": {exec.Command("python3", script, clean, "--key", key), "ok: the export matches or extends it"},
	} {
		if out, err := tc.cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s with the key: %v\n%s", name, err, out)
		}
	}

	// Tampering with the file.
	lines := readLines(t, clean)
	edited := slices.Clone(lines)
	edited[2] = strings.Replace(edited[2], `"channel":"email"`, `"channel":"call"`, 1)
	expect(writeLines(t, dir, "edited.jsonl", edited), 3)
	expect(writeLines(t, dir, "deleted.jsonl", slices.Delete(slices.Clone(lines), 3, 4)), 4)
	swapped := slices.Clone(lines)
	swapped[1], swapped[4] = swapped[4], swapped[1]
	expect(writeLines(t, dir, "reordered.jsonl", swapped), 2)

	// Tampering with the database, directly.
	cl, err := mongo.Connect(options.Client().ApplyURI(stk.MongoURI()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(context.Background())
	entries := cl.Database("rcm_compliance").Collection(auditlog.EntriesCollection)
	ctx := context.Background()
	var stored auditlog.Doc
	if err := entries.FindOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key(acct, 4)}}).Decode(&stored); err != nil {
		t.Fatal(err)
	}
	tampered := strings.Replace(stored.Data.StringValue(), `"channel":"call"`, `"channel":"email"`, 1)
	if _, err := entries.UpdateOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key(acct, 4)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "data", Value: tampered}}}}); err != nil {
		t.Fatal(err)
	}
	if v := verifyLog(t, tok); v.OK || v.FirstBrokenSeq == nil || *v.FirstBrokenSeq != 4 {
		t.Fatalf("after editing entry 4: got %+v", v)
	}
	expect(export("db-edited.jsonl"), 4)
	if _, err := entries.DeleteOne(ctx, bson.D{{Key: "_id", Value: seqlog.Key(acct, 2)}}); err != nil {
		t.Fatal(err)
	}
	if v := verifyLog(t, tok); v.OK || v.FirstBrokenSeq == nil || *v.FirstBrokenSeq != 2 || v.HeadSeq != 6 || v.Entries != 5 {
		t.Fatalf("after deleting entry 2: got %+v", v)
	}
	expect(export("db-deleted.jsonl"), 2)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func writeLines(t *testing.T, dir, name string, lines []string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
