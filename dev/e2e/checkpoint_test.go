package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

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
