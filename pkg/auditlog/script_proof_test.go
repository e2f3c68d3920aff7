package auditlog_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
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

// receipt is the tlog-proof of entry index+1 in the tree of the first
// size entries, as the service answers it, signed by signers.
func (l *pyLog) receipt(t *testing.T, size, index int64, signers ...note.Signer) []byte {
	t.Helper()
	p, err := tlog.ProveRecord(size, index, l)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := auditlog.LeafData(l.entries[index])
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "c2sp.org/tlog-proof@v1\nextra %s\nindex %d\n", base64.StdEncoding.EncodeToString(leaf), index)
	for _, h := range p {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(l.checkpoint(t, size, signers...))
	return b.Bytes()
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "receipt.tlog-proof")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAuditorScriptChecksAReceiptAlone: docs/verify_log.py --proof checks
// a receipt built with x/mod's tlog, at every index of every size, given
// the account's verifier key (and a witness's), and prints the entry; a
// receipt of another key or account, edited, or whose leaf is not the
// entry it claims fails with exit status 1 saying why.
func TestAuditorScriptChecksAReceiptAlone(t *testing.T) {
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
	l := newPyLog(t, pyEntries(t, 7, 0))
	good := l.receipt(t, 7, 2, logSigner, cosigner)
	out, err := script(t, "--proof", writeTemp(t, good), "--key", vkey, "--witness", wvkey)
	if err != nil || !strings.HasPrefix(out, "ok: entry 3 of org_py is in the log's tree of 7 entries signed by "+pyOrigin+", cosigned by 1 witness(es)\n") ||
		!strings.Contains(out, `"eventId": "evt_3"`) || !strings.Contains(out, `"hash": "`+l.entries[2].Hash+`"`) {
		t.Fatalf("receipt: %v\n%s", err, out)
	}
	args := []string{"--key", vkey}
	for size := int64(1); size <= 7; size++ {
		for index := int64(0); index < size; index++ {
			args = append(args, "--proof", writeTemp(t, l.receipt(t, size, index, logSigner)))
		}
	}
	if out, err := script(t, args...); err != nil || strings.Count(out, "ok: entry ") != 28 {
		t.Fatalf("every index of every size up to 7: %v\n%s", err, out)
	}

	otherLogSigner, otherLog := keyPair(t, pyOrigin)
	_, otherAccount := keyPair(t, "rcm.local/compliance/org_other")
	lines := strings.Split(string(good), "\n")
	h, _ := base64.StdEncoding.DecodeString(lines[3])
	h[0] ^= 1
	lines[3] = base64.StdEncoding.EncodeToString(h)
	seqWrong := pyEntries(t, 7, 0)
	seqWrong[2].Seq = 9
	hashWrong := pyEntries(t, 7, 0)
	hashWrong[2].Actor.ID = "user_someone_else"
	for name, tc := range map[string]struct {
		receipt []byte
		args    []string
		want    string
	}{
		"another log key":      {good, []string{"--key", otherLog}, "no valid signature of the log's key"},
		"signed by another":    {l.receipt(t, 7, 2, otherLogSigner), []string{"--key", vkey}, "no valid signature of the log's key"},
		"another account's":    {good, []string{"--key", otherAccount}, "the checkpoint is of '" + pyOrigin + "'"},
		"size edited":          {bytes.Replace(good, []byte("\n7\n"), []byte("\n6\n"), 1), []string{"--key", vkey}, "no valid signature of the log's key"},
		"proof hash flipped":   {[]byte(strings.Join(lines, "\n")), []string{"--key", vkey}, "inclusion proof of index 2 does not verify"},
		"another entry":        {bytes.Replace(good, []byte("index 2\n"), []byte("index 3\n"), 1), []string{"--key", vkey}, "inclusion proof of index 3 does not verify"},
		"index beyond":         {bytes.Replace(good, []byte("index 2\n"), []byte("index 7\n"), 1), []string{"--key", vkey}, "inclusion proof of index 7 does not verify"},
		"no witness cosig":     {l.receipt(t, 7, 2, logSigner), []string{"--key", vkey, "--witness", wvkey}, "no valid cosignature of witness rcm.local/witness"},
		"leaf of another seq":  {newPyLog(t, seqWrong).receipt(t, 7, 2, logSigner), []string{"--key", vkey}, "the entry is seq 9 of org_py, the proof is of index 2"},
		"leaf hash not sealed": {newPyLog(t, hashWrong).receipt(t, 7, 2, logSigner), []string{"--key", vkey}, "the entry's hash is not the hash of its fields"},
		"not a receipt":        {[]byte("hello\n\nworld\n"), []string{"--key", vkey}, "not a c2sp.org/tlog-proof@v1"},
	} {
		out, err := script(t, append([]string{"--proof", writeTemp(t, tc.receipt)}, tc.args...)...)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %v\n%s, want exit 1 saying %q", name, err, out, tc.want)
		}
	}
}
