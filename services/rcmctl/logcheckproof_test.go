package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rcm-platform/rcm/pkg/auditlog"
)

// buildReceipt is the tlog-proof of entry index+1 of es in the tree of
// its first size entries, built with x/mod's tlog, the checkpoint signed
// by signers.
func buildReceipt(t *testing.T, es []auditlog.Entry, size, index int64, signers ...note.Signer) []byte {
	t.Helper()
	var hashes []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	data := leaves(t, es[:size])
	for i, d := range data {
		hs, err := tlog.StoredHashes(int64(i), d, reader)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hs...)
	}
	p, err := tlog.ProveRecord(size, index, reader)
	if err != nil {
		t.Fatal(err)
	}
	root, err := tlog.TreeHash(size, reader)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "c2sp.org/tlog-proof@v1\nextra %s\nindex %d\n", base64.StdEncoding.EncodeToString(data[index]), index)
	for _, h := range p {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	cp, err := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n%d\n%s\n", testOrigin, size, root)}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(cp)
	return b.Bytes()
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLogCheckProofChecksAReceiptAlone: a receipt checks with the
// account's verifier key alone (and a witness's key when cosigned) and
// prints the entry; a receipt signed by another key, for another
// account, edited, or whose leaf is not the entry it claims fails with
// exit status 1 saying why.
func TestLogCheckProofChecksAReceiptAlone(t *testing.T) {
	t.Parallel()
	es := testEntries(t, 7)
	signer, vkey := logSigner(t)
	wskey, wvkey01, err := note.GenerateKey(rand.Reader, "witness.test/w")
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
	good := buildReceipt(t, es, 7, 2, signer, cosigner)
	path := writeFile(t, "receipt.tlog-proof", good)
	out, _, err := runCmd(t, "log", "check-proof", path, "--key", vkey, "--witness", wvkey)
	if err != nil || !strings.HasPrefix(out, "ok: entry 3 of org_t is in the log's tree of 7 entries signed by "+testOrigin) ||
		!strings.Contains(out, `"eventId": "evt_3"`) || !strings.Contains(out, `"hash": "`+es[2].Hash+`"`) {
		t.Fatalf("check-proof: %v\n%s", err, out)
	}
	// The key as a file, and as the bare public key; every index of every size.
	keyFile := writeFile(t, "vkey", []byte(vkey+"\n"))
	bare := base64.StdEncoding.EncodeToString(must(t, func() ([]byte, error) {
		raw, err := base64.StdEncoding.DecodeString(strings.SplitN(vkey, "+", 3)[2])
		return raw[1:], err
	}))
	for size := int64(1); size <= 7; size++ {
		for index := int64(0); index < size; index++ {
			p := writeFile(t, "r", buildReceipt(t, es, size, index, signer))
			for _, k := range []string{keyFile, bare} {
				if out, _, err := runCmd(t, "log", "check-proof", "--key", k, p); err != nil {
					t.Fatalf("index %d of %d with key %s: %v\n%s", index, size, k, err, out)
				}
			}
		}
	}

	otherSigner, otherVKey := logSigner(t)
	_, otherAccount, _ := note.GenerateKey(rand.Reader, "rcm.local/compliance/org_other")
	flipped := bytes.Clone(good)
	lines := strings.Split(string(flipped), "\n")
	h, _ := base64.StdEncoding.DecodeString(lines[3])
	h[0] ^= 1
	lines[3] = base64.StdEncoding.EncodeToString(h)
	seqWrong := append([]auditlog.Entry(nil), es...)
	seqWrong[2].Seq = 9
	hashWrong := append([]auditlog.Entry(nil), es...)
	hashWrong[2].Actor.ID = "user_someone_else"
	for name, tc := range map[string]struct {
		receipt []byte
		args    []string
		want    string
	}{
		"another log key":      {good, []string{"--key", otherVKey}, "does not verify with the log's key"},
		"signed by another":    {buildReceipt(t, es, 7, 2, otherSigner), []string{"--key", vkey}, "does not verify with the log's key"},
		"another account's":    {good, []string{"--key", otherAccount}, `the checkpoint is of "` + testOrigin + `"`},
		"size edited":          {bytes.Replace(good, []byte("\n7\n"), []byte("\n6\n"), 1), []string{"--key", vkey}, "does not verify"},
		"proof hash flipped":   {[]byte(strings.Join(lines, "\n")), []string{"--key", vkey}, "inclusion proof of index 2 does not verify"},
		"another entry":        {bytes.Replace(good, []byte("index 2\n"), []byte("index 3\n"), 1), []string{"--key", vkey}, "inclusion proof of index 3 does not verify"},
		"index beyond":         {bytes.Replace(good, []byte("index 2\n"), []byte("index 7\n"), 1), []string{"--key", vkey}, "not in a tree of 7"},
		"no witness cosig":     {buildReceipt(t, es, 7, 2, signer), []string{"--key", vkey, "--witness", wvkey}, "no cosignature of witness witness.test/w"},
		"leaf of another seq":  {buildReceipt(t, seqWrong, 7, 2, signer), []string{"--key", vkey}, "the entry is seq 9 of org_t, the proof is of index 2"},
		"leaf hash not sealed": {buildReceipt(t, hashWrong, 7, 2, signer), []string{"--key", vkey}, "the entry's hash is not the hash of its fields"},
		"not a receipt":        {[]byte("hello\n\nworld\n"), []string{"--key", vkey}, "not a c2sp.org/tlog-proof@v1"},
	} {
		_, _, err := runCmd(t, append([]string{"log", "check-proof", writeFile(t, "r", tc.receipt)}, tc.args...)...)
		var ee exitError
		if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want exit status 1 saying %q", name, err, tc.want)
		}
	}
	if _, _, err := runCmd(t, "log", "check-proof", path); err == nil || errors.As(err, new(exitError)) {
		t.Fatalf("no key: got %v, want a usage error", err)
	}
}

func must[T any](t *testing.T, f func() (T, error)) T {
	t.Helper()
	v, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
