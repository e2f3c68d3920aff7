package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/witness"
)

// receipt is a parsed c2sp.org/tlog-proof@v1: the leaf data in extra,
// its index, the inclusion proof and the checkpoint note it is proved in.
type receipt struct {
	extra      []byte
	index      int64
	proof      tlog.RecordProof
	checkpoint []byte
}

const proofHeader = "c2sp.org/tlog-proof@v1"

// parseReceipt reads a tlog-proof: the header line, an optional extra
// line, the index line, one base64 hash a line, a blank line, then the
// checkpoint.
func parseReceipt(raw []byte) (receipt, error) {
	head, cp, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		return receipt{}, errors.New("no blank line before the checkpoint")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0] != proofHeader {
		return receipt{}, fmt.Errorf("the first line is not %s", proofHeader)
	}
	lines = lines[1:]
	var r receipt
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		var err error
		if r.extra, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[0], "extra ")); err != nil {
			return receipt{}, fmt.Errorf("extra: %w", err)
		}
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return receipt{}, errors.New("no index line")
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[0], "index "), 10, 64)
	if err != nil || index < 0 {
		return receipt{}, fmt.Errorf("index %q", strings.TrimPrefix(lines[0], "index "))
	}
	r.index = index
	for _, l := range lines[1:] {
		h, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(h) != tlog.HashSize {
			return receipt{}, fmt.Errorf("proof hash %q", l)
		}
		r.proof = append(r.proof, tlog.Hash(h))
	}
	r.checkpoint = cp
	return r, nil
}

// logCheckProof checks one entry's receipt alone, given the log's
// verifier key: the checkpoint's signature (and the witnesses'
// cosignatures asked for), that the leaf in extra is at index in the
// checkpoint's tree (tlog.CheckRecord against its root), and that the
// leaf is an entry of the checkpoint's account at seq index+1 whose hash
// holds; then it prints the entry.
func logCheckProof(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("log check-proof", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "the log's verifier key for the account (GET /v1/compliance-log/verifier-key), its base64 public key, or a file holding either (required)")
	var witnesses multiFlag
	fs.Var(&witnesses, "witness", "a witness verifier key whose cosignature the checkpoint must carry (repeatable)")
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 || *key == "" {
		return errors.New("log check-proof: give the receipt file and --key, the log's verifier key")
	}
	keyText := readIfFile(*key)
	pub, err := witness.ParseLogKey(keyText)
	if err != nil {
		return fmt.Errorf("log check-proof: --key: %w", err)
	}
	var wvs []note.Verifier
	for _, w := range witnesses {
		v, err := fnote.NewVerifierForCosignatureV1(readIfFile(w))
		if err != nil {
			return fmt.Errorf("log check-proof: --witness %s: %w", w, err)
		}
		wvs = append(wvs, v)
	}
	path := fs.Arg(0)
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	entry, summary, err := checkReceipt(raw, keyText, pub, wvs)
	if err != nil {
		return exitError{code: 1, err: fmt.Errorf("log check-proof: %s: %w", path, err)}
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, entry, "", "  "); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: %s\n%s\n", summary, pretty.Bytes())
	return nil
}

// checkReceipt checks a receipt with the log's public key pub (keyText
// as given: a verifier key names the origin the checkpoint must have) and
// returns the entry's leaf data and what was proved.
func checkReceipt(raw []byte, keyText string, pub ed25519.PublicKey, wvs []note.Verifier) ([]byte, string, error) {
	r, err := parseReceipt(raw)
	if err != nil {
		return nil, "", fmt.Errorf("not a %s: %w", proofHeader, err)
	}
	c, err := parseCheckpointText(r.checkpoint)
	if err != nil {
		return nil, "", fmt.Errorf("its checkpoint: %w", err)
	}
	if v, err := note.NewVerifier(keyText); err == nil && v.Name() != c.Origin {
		return nil, "", fmt.Errorf("the checkpoint is of %q, the key of %q", c.Origin, v.Name())
	}
	vkey, err := note.NewEd25519VerifierKey(c.Origin, pub)
	if err != nil {
		return nil, "", err
	}
	lv, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, "", err
	}
	n, err := note.Open(r.checkpoint, note.VerifierList(append([]note.Verifier{lv}, wvs...)...))
	if err != nil || !signedBy(n, lv) {
		return nil, "", fmt.Errorf("the checkpoint's signature does not verify with the log's key: %v", err)
	}
	for _, wv := range wvs {
		if !signedBy(n, wv) {
			return nil, "", fmt.Errorf("the checkpoint carries no cosignature of witness %s", wv.Name())
		}
	}
	if r.extra == nil {
		return nil, "", errors.New("no extra line: the receipt does not carry the entry")
	}
	size := int64(c.Size)
	if r.index >= size {
		return nil, "", fmt.Errorf("index %d is not in a tree of %d entries", r.index, size)
	}
	if err := tlog.CheckRecord(r.proof, size, tlog.Hash(c.Hash), r.index, tlog.RecordHash(r.extra)); err != nil {
		return nil, "", fmt.Errorf("the inclusion proof of index %d does not verify against the checkpoint's root: %w", r.index, err)
	}
	// The leaf is proved; what it says must be the entry the receipt
	// claims: of the checkpoint's account, at seq index+1, its hash the
	// chain's formula over its fields.
	var e auditlog.Entry
	if err := json.Unmarshal(r.extra, &e); err != nil {
		return nil, "", fmt.Errorf("extra is not an entry: %w", err)
	}
	account := c.Origin[strings.LastIndex(c.Origin, "/")+1:]
	if e.AccountID != account || e.Seq != r.index+1 {
		return nil, "", fmt.Errorf("the entry is seq %d of %s, the proof is of index %d of %s", e.Seq, e.AccountID, r.index, account)
	}
	if h, err := auditlog.ComputeHash(e); err != nil || h != e.Hash {
		return nil, "", fmt.Errorf("the entry's hash is not the hash of its fields")
	}
	summary := fmt.Sprintf("entry %d of %s is in the log's tree of %d entries signed by %s", e.Seq, account, size, c.Origin)
	if len(wvs) > 0 {
		summary += fmt.Sprintf(", cosigned by %d witness(es)", len(wvs))
	}
	return r.extra, summary, nil
}
