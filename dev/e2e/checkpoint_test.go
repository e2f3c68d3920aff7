package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TestCheckpointsThroughTheGateway: an account that acts gets a signed,
// witness-cosigned checkpoint within seconds; it verifies with x/mod's
// note package given the verifier key route's key; an entry's proof
// verifies against it; verify accepts it as an earlier checkpoint; and
// each answer matches openapi.yaml.
func TestCheckpointsThroughTheGateway(t *testing.T) {
	t.Parallel()
	a := newAccount(t, "org")
	tok := token(t, a)
	call(t, "GET", "/v1/compliance-log/checkpoint", tok, nil).wantError(t, http.StatusNotFound, "Not found.")
	putDoc(t, "doc_cp_"+a, a, "BEHIND", 1)
	startCampaign(t, tok, "doc_cp_"+a, startBody())
	waitLog(t, tok, 1)

	var cp string
	eventually(t, 10*time.Second, "a cosigned checkpoint", func() bool {
		r := call(t, "GET", "/v1/compliance-log/checkpoint", tok, nil)
		cp = string(r.Body)
		return r.Status == http.StatusOK && strings.Count(cp, "\u2014 ") == 2
	})
	vk := call(t, "GET", "/v1/compliance-log/verifier-key", tok, nil)
	if vk.Status != http.StatusOK || !strings.HasPrefix(vk.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("verifier key: %d %s %s", vk.Status, vk.Header.Get("Content-Type"), vk.Body)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vk.Body)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open([]byte(cp), note.VerifierList(v))
	if err != nil {
		t.Fatalf("the checkpoint does not verify with %s: %v\n%s", vk.Body, err, cp)
	}
	body := strings.Split(n.Text, "\n")
	root, err := tlog.ParseHash(body[2])
	if err != nil || body[0] != v.Name() || body[1] != "1" {
		t.Fatalf("checkpoint body %q", n.Text)
	}

	r := call(t, "GET", "/v1/compliance-log/entries/1/proof", tok, nil)
	head, inner, _ := strings.Cut(string(r.Body), "\n\n")
	lines := strings.Split(head, "\n")
	if r.Status != http.StatusOK || lines[0] != "c2sp.org/tlog-proof@v1" || lines[2] != "index 0" || inner != cp {
		t.Fatalf("proof: %d %s", r.Status, r.Body)
	}
	leaf, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
	if err := tlog.CheckRecord(nil, 1, root, 0, tlog.RecordHash(leaf)); err != nil {
		t.Fatalf("the proof of entry 1 does not verify: %v", err)
	}
	checkReceipt(t, a, tok, strings.TrimSpace(string(vk.Body)), r.Body)

	r = call(t, "GET", "/v1/compliance-log/consistency?from=1&to=1", tok, nil)
	if r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != `{"from":1,"to":1,"proof":[]}` {
		t.Fatalf("consistency 1 to 1: %d %s", r.Status, r.Body)
	}
	r = call(t, "GET", "/v1/compliance-log/verify?checkpoint="+base64.RawURLEncoding.EncodeToString([]byte(cp)), tok, nil)
	var res struct {
		OK         bool `json:"ok"`
		Checkpoint struct {
			TreeSize   int64 `json:"treeSize"`
			Consistent bool  `json:"consistent"`
		} `json:"checkpoint"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &res) != nil || !res.OK || !res.Checkpoint.Consistent || res.Checkpoint.TreeSize != 1 {
		t.Fatalf("verify?checkpoint=: %d %s", r.Status, r.Body)
	}
	call(t, "GET", "/v1/compliance-log/verify?checkpoint=bm90IGEgbm90ZQ", tok, nil).wantError(t, http.StatusBadRequest, "Invalid query parameter.")
	call(t, "GET", "/v1/compliance-log/consistency?from=2&to=1", tok, nil).wantError(t, http.StatusBadRequest, "Invalid query parameter.")
	call(t, "GET", "/v1/compliance-log/entries/2/proof", tok, nil).wantError(t, http.StatusNotFound, "Not found.")
}

// checkReceipt fetches entry 1's receipt with rcmctl log proof (the
// gateway's answer, proof), and checks it alone with rcmctl log
// check-proof and the auditor's script, given the account's verifier key
// and the stack's witness key; a receipt with its leaf edited fails both.
func checkReceipt(t *testing.T, account, tok, vkey string, proof []byte) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "rcmctl"), "log", "proof", "--account", account, "--seq", "1",
		"--gateway", stk.GatewayURL(), "--token", tok).Output()
	if err != nil || string(out) != string(proof) {
		t.Fatalf("rcmctl log proof: %v\n%s\nwant the gateway's\n%s", err, out, proof)
	}
	dir := t.TempDir()
	receipt := filepath.Join(dir, "entry-1.tlog-proof")
	key := filepath.Join(dir, account+".vkey")
	for path, b := range map[string][]byte{receipt: out, key: []byte(vkey + "\n")} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wkey := filepath.Join(stk.DataDir(), stack.WitnessStateDir, "witness.vkey")
	check := map[string][]string{
		"rcmctl": {filepath.Join(binDir, "rcmctl"), "log", "check-proof", receipt, "--key", key, "--witness", wkey},
		"python": {"python3", verifyScript(), "--proof", receipt, "--key", key, "--witness", wkey},
	}
	want := "ok: entry 1 of " + account + " is in the log's tree of 1 entries signed by " + strings.SplitN(vkey, "+", 2)[0]
	for tool, argv := range check {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), `"eventType": "campaign_started"`) {
			t.Errorf("%s checks the receipt: %v\n%s", tool, err, out)
		}
	}
	// The leaf edited: it is no longer the one the checkpoint's tree holds.
	lines := strings.Split(string(out), "\n")
	leaf, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
	lines[1] = "extra " + base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(leaf), "campaign_started", "campaign_ended", 1)))
	if err := os.WriteFile(receipt, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	for tool, argv := range check {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "inclusion proof of index 0 does not verify") {
			t.Errorf("%s on an edited receipt: %v\n%s, want exit status 1", tool, err, out)
		}
	}
}
