package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/witness"
)

const testOrigin = "rcm.local/compliance/org_t"

func testEntries(t *testing.T, n int) []auditlog.Entry {
	t.Helper()
	var out []auditlog.Entry
	prev := auditlog.GenesisHash
	for i := 1; i <= n; i++ {
		e := auditlog.Entry{
			EventID: fmt.Sprintf("evt_%d", i), AccountID: "org_t", Seq: int64(i), EventType: "opt_out",
			DocumentID: "doc_1", CampaignID: "rcm_1", Actor: auditlog.Actor{Type: "user", ID: "user_1"},
			Data:       json.RawMessage(fmt.Sprintf(`{"eventType":"opt_out","channel":"sms","n":%d}`, i)),
			OccurredAt: "2026-04-27T10:00:00.000Z", RecordedAt: "2026-04-27T10:00:00.001Z",
		}
		if err := auditlog.Seal(&e, prev); err != nil {
			t.Fatal(err)
		}
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

// rewrite edits entry seq's data and re-seals it and every later entry
// with the documented formula: the chain holds again.
func rewrite(t *testing.T, es []auditlog.Entry, seq int) []auditlog.Entry {
	t.Helper()
	out := append([]auditlog.Entry(nil), es...)
	out[seq-1].Data = json.RawMessage(`{"eventType":"opt_out","channel":"all"}`)
	for i := seq - 1; i < len(out); i++ {
		if err := auditlog.Seal(&out[i], out[i].PrevHash); err != nil {
			t.Fatal(err)
		}
		if i+1 < len(out) {
			out[i+1].PrevHash = out[i].Hash
		}
	}
	return out
}

func writeExport(t *testing.T, dir string, es []auditlog.Entry) string {
	t.Helper()
	var b bytes.Buffer
	for _, e := range es {
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	path := filepath.Join(dir, "org_t.jsonl")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mth is the RFC 6962 Merkle tree hash, written here from the RFC apart
// from the code under test.
func mth(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		h := sha256.Sum256(append([]byte{0}, leaves[0]...))
		return h[:]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	h := sha256.Sum256(append(append([]byte{1}, mth(leaves[:k])...), mth(leaves[k:])...))
	return h[:]
}

func leaves(t *testing.T, es []auditlog.Entry) [][]byte {
	t.Helper()
	var out [][]byte
	for _, e := range es {
		d, err := auditlog.LeafData(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// logSigner is the log's key under the account's origin.
func logSigner(t *testing.T) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

func signCheckpoint(t *testing.T, s note.Signer, es []auditlog.Entry, size int) []byte {
	t.Helper()
	text := fmt.Sprintf("%s\n%d\n%s\n", testOrigin, size, base64.StdEncoding.EncodeToString(mth(leaves(t, es[:size]))))
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func wantExit1(t *testing.T, err error, contains string) {
	t.Helper()
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), contains) {
		t.Fatalf("got %v, want exit status 1 saying %q", err, contains)
	}
}

func TestLogVerifyChecksTreeAndCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	es := testEntries(t, 6)
	export := writeExport(t, dir, es)
	signer, vkey := logSigner(t)
	if err := os.WriteFile(filepath.Join(dir, "org_t.checkpoint"), signCheckpoint(t, signer, es, 6), 0o600); err != nil {
		t.Fatal(err)
	}
	earlier := filepath.Join(dir, "earlier.checkpoint")
	if err := os.WriteFile(earlier, signCheckpoint(t, signer, es, 4), 0o600); err != nil {
		t.Fatal(err)
	}

	// The checkpoint beside the export, found by its name.
	out, _, err := runCmd(t, "log", "verify", export, "--key", vkey)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	var res struct {
		OK          bool   `json:"ok"`
		TreeSize    int64  `json:"treeSize"`
		RootHash    string `json:"rootHash"`
		Checkpoints []struct {
			TreeSize   int64 `json:"treeSize"`
			Consistent bool  `json:"consistent"`
		} `json:"checkpoints"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if want := base64.StdEncoding.EncodeToString(mth(leaves(t, es))); !res.OK || res.TreeSize != 6 || res.RootHash != want ||
		len(res.Checkpoints) != 1 || !res.Checkpoints[0].Consistent || res.Checkpoints[0].TreeSize != 6 {
		t.Fatalf("got %s, want ok, tree of 6 with root %s, one consistent checkpoint", out, want)
	}
	// An earlier checkpoint: the export extends it.
	if out, _, err := runCmd(t, "log", "verify", "--checkpoint", earlier, "--key", vkey, export); err != nil {
		t.Fatalf("verify --checkpoint earlier: %v\n%s", err, out)
	}

	// The careful rewrite: entry 2 edited, 2..6 re-sealed. The chain alone
	// is fooled; the earlier checkpoint is not.
	rewritten := writeExport(t, t.TempDir(), rewrite(t, es, 2))
	if out, _, err := runCmd(t, "log", "verify", rewritten); err != nil || !strings.Contains(out, `"ok":true`) {
		t.Fatalf("the re-sealed chain alone: %v %s, want ok", err, out)
	}
	_, _, err = runCmd(t, "log", "verify", rewritten, "--checkpoint", earlier, "--key", vkey)
	wantExit1(t, err, "the log was rewritten")

	// A checkpoint beyond the export: entries are missing.
	short := writeExport(t, t.TempDir(), es[:3])
	_, _, err = runCmd(t, "log", "verify", short, "--checkpoint", earlier, "--key", vkey)
	wantExit1(t, err, "fewer than the checkpoint's 4")

	// Another key, or a checkpoint edited after signing.
	_, otherVKey := logSigner(t)
	_, _, err = runCmd(t, "log", "verify", export, "--checkpoint", earlier, "--key", otherVKey)
	wantExit1(t, err, "does not verify with the log's key")
	cp, _ := os.ReadFile(earlier)
	forged := filepath.Join(t.TempDir(), "forged.checkpoint")
	os.WriteFile(forged, bytes.Replace(cp, []byte("\n4\n"), []byte("\n3\n"), 1), 0o600)
	_, _, err = runCmd(t, "log", "verify", export, "--checkpoint", forged, "--key", vkey)
	wantExit1(t, err, "does not verify")

	// A checkpoint needs the key.
	if _, _, err := runCmd(t, "log", "verify", export, "--checkpoint", earlier); err == nil || !strings.Contains(err.Error(), "--key") {
		t.Fatalf("no key: %v, want an error asking for --key", err)
	}
}

// TestLogVerifyChecksWitnessCosignatures: a checkpoint cosigned by the
// witness verifies with --witness; the key of a witness that did not
// cosign fails it.
func TestLogVerifyChecksWitnessCosignatures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	es := testEntries(t, 3)
	export := writeExport(t, dir, es)
	signer, vkey := logSigner(t)
	pub, err := witness.ParseLogKey(vkey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := witness.LoadOrCreateKey(t.TempDir(), "witness.test/w")
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.New(witness.Config{StateDir: t.TempDir(), Signer: key.Signer, OriginPrefix: "rcm.local/compliance", LogKey: pub, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	cp := signCheckpoint(t, signer, es, 3)
	resp, err := http.Post(srv.URL+"/add-checkpoint", "text/plain", bytes.NewReader(append([]byte("old 0\n\n"), cp...)))
	if err != nil {
		t.Fatal(err)
	}
	cosig, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("witness: %d %s", resp.StatusCode, cosig)
	}
	path := filepath.Join(dir, "org_t.checkpoint")
	os.WriteFile(path, append(cp, cosig...), 0o600)
	if out, _, err := runCmd(t, "log", "verify", export, "--key", vkey, "--witness", key.VerifierKey); err != nil || !strings.Contains(out, `"witnesses":1`) {
		t.Fatalf("with the witness: %v\n%s", err, out)
	}
	other, _ := witness.LoadOrCreateKey(t.TempDir(), "witness.test/other")
	_, _, err = runCmd(t, "log", "verify", export, "--key", vkey, "--witness", other.VerifierKey)
	wantExit1(t, err, "no cosignature of witness witness.test/other")
}

// TestLogProofPrintsTheReceipt: log proof asks the gateway as the account
// and prints the tlog-proof, which verifies with another implementation
// (github.com/transparency-dev/merkle) than the one that built it.
func TestLogProofPrintsTheReceipt(t *testing.T) {
	t.Parallel()
	es := testEntries(t, 5)
	signer, _ := logSigner(t)
	body := bytes.NewBuffer(buildReceipt(t, es, 5, 2, signer))

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok_t" {
			http.Error(w, `{"error":"Invalid or expired token."}`, http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/v1/compliance-log/entries/3/proof" {
			http.Error(w, `{"error":"Not found."}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body.Bytes())
	}))
	defer srv.Close()

	out, _, err := runCmd(t, "log", "proof", "--gateway", srv.URL, "--token", "tok_t", "--account", "org_t", "--seq", "3")
	if err != nil || out != body.String() {
		t.Fatalf("proof: %v\n%s", err, out)
	}
	// The receipt alone: the leaf in extra, the proof lines, the root in the checkpoint.
	head, cp, _ := strings.Cut(out, "\n\n")
	lines := strings.Split(head, "\n")
	data, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
	var path [][]byte
	for _, l := range lines[3:] {
		h, _ := base64.StdEncoding.DecodeString(l)
		path = append(path, h)
	}
	root, _ := base64.StdEncoding.DecodeString(strings.Split(cp, "\n")[2])
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 2, 5, rfc6962.DefaultHasher.HashLeaf(data), path, root); err != nil {
		t.Fatalf("the receipt's inclusion proof: %v", err)
	}

	if _, _, err := runCmd(t, "log", "proof", "--gateway", srv.URL, "--token", "tok_t", "--account", "org_t", "--seq", "9"); err == nil ||
		!strings.Contains(err.Error(), "not covered by a signed checkpoint") {
		t.Fatalf("uncovered seq: %v", err)
	}
	if _, _, err := runCmd(t, "log", "proof", "--gateway", srv.URL, "--token", "bad", "--account", "org_t", "--seq", "3"); err == nil ||
		!strings.Contains(err.Error(), "401") {
		t.Fatalf("bad token: %v", err)
	}
}
