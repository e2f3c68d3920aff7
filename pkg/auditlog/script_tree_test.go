package auditlog_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rcm-platform/rcm/pkg/auditlog"
)

const pyOrigin = "rcm.local/compliance/org_py"

// pyLog is an account's entries with the tree the service builds over
// them (golang.org/x/mod/sumdb/tlog over auditlog.LeafData).
type pyLog struct {
	entries []auditlog.Entry
	hashes  []tlog.Hash
}

func (l *pyLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = l.hashes[x]
	}
	return out, nil
}

func newPyLog(t *testing.T, entries []auditlog.Entry) *pyLog {
	t.Helper()
	l := &pyLog{entries: entries}
	for i, e := range entries {
		data, err := auditlog.LeafData(e)
		if err != nil {
			t.Fatal(err)
		}
		hs, err := tlog.StoredHashes(int64(i), data, l)
		if err != nil {
			t.Fatal(err)
		}
		l.hashes = append(l.hashes, hs...)
	}
	return l
}

func (l *pyLog) root(t *testing.T, n int64) string {
	t.Helper()
	h, err := tlog.TreeHash(n, l)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(h[:])
}

func (l *pyLog) checkpoint(t *testing.T, n int64, signers ...note.Signer) []byte {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n%d\n%s\n", pyOrigin, n, l.root(t, n))}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func (l *pyLog) write(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, e := range l.entries {
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	path := filepath.Join(dir, "org_py.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pyEntries(t *testing.T, n int, edit int) []auditlog.Entry {
	t.Helper()
	var out []auditlog.Entry
	prev := auditlog.GenesisHash
	for i := 1; i <= n; i++ {
		data := fmt.Sprintf(`{"eventType":"opt_out","channel":"sms","score":0.1,"small":5e-7,"n":%d}`, i)
		if i == edit {
			data = `{"eventType":"opt_out","channel":"all"}`
		}
		e := auditlog.Entry{
			EventID: fmt.Sprintf("evt_%d", i), AccountID: "org_py", Seq: int64(i), EventType: "opt_out",
			DocumentID: "doc_1", CampaignID: "rcm_1", Actor: auditlog.Actor{Type: "user", ID: "user_1", SessionID: "sess_1"},
			Data: json.RawMessage(data), OccurredAt: "2026-04-27T10:00:00.000Z", RecordedAt: "2026-04-27T10:00:00.001Z",
		}
		if err := auditlog.Seal(&e, prev); err != nil {
			t.Fatal(err)
		}
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

func keyPair(t *testing.T, name string) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

func script(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("python3", append([]string{filepath.Join("..", "..", "docs", "verify_log.py")}, args...)...).CombinedOutput()
	return string(out), err
}

// TestAuditorScriptChecksTreeAndCheckpoint: docs/verify_log.py computes the
// same tree root as the service's tree, checks the log's signature and a
// witness's cosignature on the checkpoint, and catches the careful
// rewrite (an entry edited and every later one re-sealed, which the chain
// alone does not see) against an earlier checkpoint.
func TestAuditorScriptChecksTreeAndCheckpoint(t *testing.T) {
	t.Parallel()
	logSigner, vkey := keyPair(t, pyOrigin)
	wskey, wvkey01, err := note.GenerateKey(rand.Reader, "rcm.local/witness")
	if err != nil {
		t.Fatal(err)
	}
	cosigner, err := fnote.NewSignerForCosignatureV1(wskey)
	if err != nil {
		t.Fatal(err)
	}
	wvkey, err := fnote.VKeyToCosignatureV1(wvkey01)
	if err != nil {
		t.Fatal(err)
	}
	_, otherVKey01, _ := note.GenerateKey(rand.Reader, "rcm.local/witness") // a witness that did not cosign
	otherWitness, _ := fnote.VKeyToCosignatureV1(otherVKey01)
	_, otherLog := keyPair(t, pyOrigin)

	dir := t.TempDir()
	l := newPyLog(t, pyEntries(t, 5, 0))
	export := l.write(t, dir)
	os.WriteFile(filepath.Join(dir, "org_py.checkpoint"), l.checkpoint(t, 5, logSigner, cosigner), 0o600)
	earlier := filepath.Join(t.TempDir(), "earlier.checkpoint")
	os.WriteFile(earlier, l.checkpoint(t, 3, logSigner), 0o600)

	out, err := script(t, export, "--key", vkey, "--witness", wvkey)
	if err != nil || !strings.Contains(out, "org_py: ok, 5 entries, head "+l.entries[4].Hash+", tree 5 root "+l.root(t, 5)) ||
		!strings.Contains(out, "org_py.checkpoint ok") {
		t.Fatalf("intact export: %v\n%s", err, out)
	}
	if out, err := script(t, export, "--key", vkey, "--checkpoint", earlier); err != nil || !strings.Contains(out, "earlier.checkpoint ok") {
		t.Fatalf("earlier checkpoint: %v\n%s", err, out)
	}

	rewritten := newPyLog(t, pyEntries(t, 5, 2)).write(t, t.TempDir())
	if out, err := script(t, rewritten); err != nil || !strings.Contains(out, "org_py: ok, 5 entries") {
		t.Fatalf("the re-sealed chain alone: %v\n%s, want ok", err, out)
	}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"rewritten":       {[]string{rewritten, "--key", vkey, "--checkpoint", earlier}, "the log was rewritten"},
		"another log key": {[]string{export, "--key", otherLog, "--checkpoint", earlier}, "no valid signature of the log's key"},
		"missing witness": {[]string{export, "--key", vkey, "--witness", otherWitness}, "no valid cosignature of witness rcm.local/witness"},
		"short export":    {[]string{newPyLog(t, pyEntries(t, 2, 0)).write(t, t.TempDir()), "--key", vkey, "--checkpoint", earlier}, "fewer than the checkpoint's 3"},
	} {
		out, err := script(t, tc.args...)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %v\n%s, want exit 1 saying %q", name, err, out, tc.want)
		}
	}
}
