package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/dev/tamper"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// rewritten is an account whose history was signed, then rewritten in
// the database the careful way (dev/tamper): entry editedSeq edited,
// every later entry, the head and the stored tree recomputed.
type rewritten struct {
	account, tok, doc, campaign string
	// earlier is the cosigned checkpoint of the history before the
	// rewrite, fetched through the gateway; key the account's verifier
	// key.
	earlier, key string
	db           *mongo.Database
	acted        int // opt-outs sent
}

const editedSeq = 3

// signThenRewrite makes an account act six times, waits for the witness
// to cosign the checkpoint of those six entries, then rewrites entry
// editedSeq in the database, and deletes the account's stored
// checkpoints too when deleteCheckpoints is set.
func signThenRewrite(t *testing.T, deleteCheckpoints bool) *rewritten {
	t.Helper()
	ctx := context.Background()
	rw := &rewritten{account: newAccount(t, "org")}
	rw.tok = token(t, rw.account)
	rw.doc = "doc_rw_" + rw.account
	putDoc(t, rw.doc, rw.account, "BEHIND", 1)
	rw.campaign = startCampaign(t, rw.tok, rw.doc, startBody())["id"].(string)
	for range 5 {
		rw.optOut(t)
	}
	waitLog(t, rw.tok, 6)
	eventually(t, 15*time.Second, "the cosigned checkpoint of 6 entries", func() bool {
		r := call(t, "GET", "/v1/compliance-log/checkpoint", rw.tok, nil)
		lines := strings.Split(string(r.Body), "\n")
		rw.earlier = string(r.Body)
		return r.Status == http.StatusOK && len(lines) > 1 && lines[1] == "6" && strings.Count(rw.earlier, "\u2014 ") == 2
	})
	vk := call(t, "GET", "/v1/compliance-log/verifier-key", rw.tok, nil)
	if vk.Status != http.StatusOK {
		t.Fatalf("verifier key: %d %s", vk.Status, vk.Body)
	}
	rw.key = strings.TrimSpace(string(vk.Body))

	cl, err := mongo.Connect(options.Client().ApplyURI(stk.MongoURI()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(context.Background()) })
	rw.db = cl.Database("rcm_compliance")
	head, err := tamper.Rewrite(ctx, rw.db, rw.account, editedSeq, func(e *auditlog.Entry) { e.Actor.ID = "user_someone_else" })
	if err != nil || head != 6 {
		t.Fatalf("rewrite: head %d %v, want 6", head, err)
	}
	if deleteCheckpoints {
		if err := tamper.DeleteCheckpoints(ctx, rw.db, rw.account); err != nil {
			t.Fatal(err)
		}
	}
	return rw
}

func (rw *rewritten) optOut(t *testing.T) {
	t.Helper()
	ch := []string{"sms", "email", "call"}[rw.acted%3]
	rw.acted++
	r := call(t, "POST", "/v1/documents/"+rw.doc+"/rcm/opt-out", rw.tok, map[string]any{"campaignId": rw.campaign, "channel": ch, "notes": fmt.Sprintf("request %d", rw.acted)})
	if r.Status != http.StatusOK {
		t.Fatalf("opt-out: %d %s", r.Status, r.Body)
	}
}

type verifyWithCheckpoint struct {
	OK             bool   `json:"ok"`
	HeadSeq        int64  `json:"headSeq"`
	TreeSize       int64  `json:"treeSize"`
	FirstBrokenSeq *int64 `json:"firstBrokenSeq"`
	Reason         string `json:"reason"`
	Checkpoint     *struct {
		TreeSize   int64 `json:"treeSize"`
		Consistent bool  `json:"consistent"`
	} `json:"checkpoint"`
}

// verifyAgainst asks verify, with the checkpoint cp when it is not "".
func (rw *rewritten) verifyAgainst(t *testing.T, cp string) verifyWithCheckpoint {
	t.Helper()
	path := "/v1/compliance-log/verify"
	if cp != "" {
		path += "?checkpoint=" + base64.RawURLEncoding.EncodeToString([]byte(cp))
	}
	r := call(t, "GET", path, rw.tok, nil)
	var v verifyWithCheckpoint
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &v) != nil {
		t.Fatalf("%s: %d %s", path, r.Status, r.Body)
	}
	return v
}

// alone is what verifying the log without a checkpoint must answer.
type alone int

const (
	// aloneOK: right after the rewrite, chain and tree hold on their own.
	aloneOK alone = iota
	// aloneAny: once the account acted again, what the running service
	// appended may or may not chain onto the rewritten entries (it
	// remembers the hash of the last entry it wrote); not what is tested.
	aloneAny
)

// checkCaught asserts what the rewrite runs into now: verify with the
// earlier checkpoint answers ok false, not consistent, whatever verify
// alone answers (a).
func (rw *rewritten) checkCaught(t *testing.T, a alone) {
	t.Helper()
	if v := rw.verifyAgainst(t, ""); a == aloneOK && !v.OK {
		t.Fatalf("verify alone right after the careful rewrite: got %+v, want ok", v)
	} else {
		t.Logf("verify alone: %+v", v)
	}
	v := rw.verifyAgainst(t, rw.earlier)
	if v.OK || v.Checkpoint == nil || v.Checkpoint.Consistent || v.Checkpoint.TreeSize != 6 {
		t.Fatalf("verify?checkpoint=<the earlier one of 6>: got %+v, want ok false, not consistent", v)
	}
}

// checkOffline exports the account's log with rcmctl and verifies it with
// rcmctl and the auditor's script: alone it verifies as a says, and
// against the earlier checkpoint both fail, saying the log was rewritten.
func (rw *rewritten) checkOffline(t *testing.T, name string, a alone) {
	t.Helper()
	dir := t.TempDir()
	export := filepath.Join(dir, name+".jsonl")
	cmd := exec.Command(filepath.Join(binDir, "rcmctl"), "log", "export", "--account", rw.account, "--out", export,
		"--gateway", stk.GatewayURL(), "--token", rw.tok)
	cmd.Env = append(os.Environ(), "RCM_MONGODB_URI="+stk.MongoURI())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	earlier := filepath.Join(t.TempDir(), "earlier.checkpoint")
	if err := os.WriteFile(earlier, []byte(rw.earlier), 0o600); err != nil {
		t.Fatal(err)
	}
	for tool, argv := range map[string][]string{
		"rcmctl": {filepath.Join(binDir, "rcmctl"), "log", "verify"},
		"python": {"python3", verifyScript()},
	} {
		if a == aloneOK {
			if out, err := exec.Command(argv[0], append(argv[1:], export)...).CombinedOutput(); err != nil {
				t.Errorf("%s on the %s export alone: %v, want it to pass\n%s", tool, name, err, out)
			}
		}
		out, err := exec.Command(argv[0], append(argv[1:], export, "--checkpoint", earlier, "--key", rw.key)...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "the log was rewritten") {
			t.Errorf("%s on the %s export with the earlier checkpoint: %v, want exit status 1 saying the log was rewritten\n%s", tool, name, err, out)
		}
	}
}

func verifyScript() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "docs", "verify_log.py")
}

// metricSum reads the sum of every sample of a counter from a /metrics
// page (0 when it has none yet).
func metricSum(t *testing.T, baseURL, name string) float64 {
	t.Helper()
	resp, err := http.Get(baseURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// loggedCount counts the lines with msg about account the services
// logged.
func loggedCount(msg, account string) int {
	n := 0
	for _, line := range strings.Split(logBuf.String(), "\n") {
		if strings.Contains(line, msg) && strings.Contains(line, account) {
			n++
		}
	}
	return n
}

func logged(msg, account string) bool { return loggedCount(msg, account) > 0 }

// TestRewriteWithCheckpointsDeletedIsCaughtThroughTheGateway: the careful
// rewrite with the account's stored checkpoints deleted, then the account
// goes on acting: the witness refuses to cosign what the service signs
// (or the service refuses to sign), counted on both sides; verify with
// the earlier checkpoint answers ok false, and so do rcmctl and the
// auditor's script on an export, before the account acts again and
// after.
func TestRewriteWithCheckpointsDeletedIsCaughtThroughTheGateway(t *testing.T) {
	t.Parallel()
	rejections := metricSum(t, stk.URL(stack.Compliance), "rcm_log_witness_rejections_total")
	failures := metricSum(t, stk.URL(stack.Compliance), "rcm_log_consistency_failures_total")
	witnessRejected := metricSum(t, stk.URL(stack.Witness), "rcm_witness_rejected_total")
	rw := signThenRewrite(t, true)

	// The rewrite holds on its own; only the earlier checkpoint shows it.
	rw.checkCaught(t, aloneOK)
	call(t, "GET", "/v1/compliance-log/checkpoint", rw.tok, nil).wantError(t, http.StatusNotFound, "Not found.")
	rw.checkOffline(t, "rewritten", aloneOK)

	// The account goes on acting.
	for range 3 {
		rw.optOut(t)
	}
	waitLog(t, rw.tok, 9)
	eventually(t, 20*time.Second, "the witness to refuse the rewritten history, or the service to refuse to sign it", func() bool {
		byWitness := logged("witness did not cosign the checkpoint", rw.account) &&
			metricSum(t, stk.URL(stack.Compliance), "rcm_log_witness_rejections_total") > rejections &&
			metricSum(t, stk.URL(stack.Witness), "rcm_witness_rejected_total") > witnessRejected
		byService := logged("compliance log tree inconsistent with its last checkpoint: not signed", rw.account) &&
			metricSum(t, stk.URL(stack.Compliance), "rcm_log_consistency_failures_total") > failures
		if byWitness || byService {
			t.Logf("refused by the witness: %v; by the service: %v", byWitness, byService)
		}
		return byWitness || byService
	})
	// Whatever the service signed since carries no cosignature.
	if r := call(t, "GET", "/v1/compliance-log/checkpoint", rw.tok, nil); r.Status == http.StatusOK && strings.Count(string(r.Body), "\u2014 ") != 1 {
		t.Fatalf("the checkpoint of the rewritten history is cosigned:\n%s", r.Body)
	}
	rw.checkCaught(t, aloneAny)
	rw.checkOffline(t, "acted", aloneAny)
}

// TestRewriteWithCheckpointsKeptIsNotSignedThroughTheGateway: the same
// rewrite with the stored checkpoints left in place: as the account goes
// on acting the service refuses to sign, counts it, and keeps serving
// the last good checkpoint byte for byte.
func TestRewriteWithCheckpointsKeptIsNotSignedThroughTheGateway(t *testing.T) {
	t.Parallel()
	failures := metricSum(t, stk.URL(stack.Compliance), "rcm_log_consistency_failures_total")
	rw := signThenRewrite(t, false)
	rw.checkCaught(t, aloneOK)

	for range 3 {
		rw.optOut(t)
	}
	waitLog(t, rw.tok, 9)
	eventually(t, 20*time.Second, "the service to refuse to sign the rewritten history", func() bool {
		return logged("compliance log tree inconsistent with its last checkpoint: not signed", rw.account) &&
			metricSum(t, stk.URL(stack.Compliance), "rcm_log_consistency_failures_total") > failures
	})
	// And again as the account acts once more.
	const refused = "compliance log tree inconsistent with its last checkpoint: not signed"
	before := loggedCount(refused, rw.account)
	rw.optOut(t)
	waitLog(t, rw.tok, 10)
	eventually(t, 20*time.Second, "a second refusal", func() bool { return loggedCount(refused, rw.account) > before })

	r := call(t, "GET", "/v1/compliance-log/checkpoint", rw.tok, nil)
	if r.Status != http.StatusOK || !sameCheckpoint(rw.earlier, string(r.Body)) {
		t.Fatalf("checkpoint after the rewrite: %d\n%s\nwant the last good one\n%s", r.Status, r.Body, rw.earlier)
	}
	rw.checkCaught(t, aloneAny)
	rw.checkOffline(t, "acted", aloneAny)
}

// sameCheckpoint reports whether served is the checkpoint good, byte for
// byte, perhaps with more cosignature lines.
func sameCheckpoint(good, served string) bool {
	gText, gSigs, _ := strings.Cut(good, "\n\n")
	sText, sSigs, _ := strings.Cut(served, "\n\n")
	if gText != sText {
		return false
	}
	have := map[string]bool{}
	for _, l := range strings.Split(sSigs, "\n") {
		have[l] = true
	}
	for _, l := range strings.Split(gSigs, "\n") {
		if !have[l] {
			return false
		}
	}
	return true
}
