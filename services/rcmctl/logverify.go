package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/witness"
)

// accountLog is one account's entries as read from an export: its chain
// and its RFC 6962 tree (the stored hashes of golang.org/x/mod/sumdb/tlog
// over auditlog.LeafData of each entry, in file order).
type accountLog struct {
	chain   *auditlog.Verifier
	hashes  []tlog.Hash
	size    int64
	leafErr error
}

func (a *accountLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(a.hashes)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = a.hashes[x]
	}
	return out, nil
}

func (a *accountLog) add(e auditlog.Entry) {
	_ = a.chain.Add(e)
	if a.leafErr != nil {
		return
	}
	data, err := auditlog.LeafData(e)
	if err != nil {
		a.leafErr = err
		return
	}
	hs, err := tlog.StoredHashes(a.size, data, a)
	if err != nil {
		a.leafErr = err
		return
	}
	a.hashes = append(a.hashes, hs...)
	a.size++
}

// root is the tree's root at size n ≤ a.size.
func (a *accountLog) root(n int64) (tlog.Hash, error) {
	if n == 0 {
		return sha256.Sum256(nil), nil // RFC 6962: the empty tree
	}
	return tlog.TreeHash(n, a)
}

// checkpointResult is what verify says of a checkpoint.
type checkpointResult struct {
	File       string `json:"file"`
	TreeSize   int64  `json:"treeSize"`
	RootHash   string `json:"rootHash"`
	Consistent bool   `json:"consistent"`
	Witnesses  int    `json:"witnesses"`
	Reason     string `json:"reason,omitempty"`
}

// logVerify re-verifies an exported log offline, without the service or
// the database: every account's chain and tree in the file, in file order,
// and the checkpoints given (--checkpoint) or found beside the file
// (<account>.checkpoint, what export writes): signed by the log's key and
// matched or extended by the export's tree.
func logVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("log verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var checkpoints, witnesses multiFlag
	fs.Var(&checkpoints, "checkpoint", "a checkpoint file the export must match or extend (repeatable; default: <account>.checkpoint beside FILE)")
	key := fs.String("key", "", "the log's verifier key (GET /v1/compliance-log/verifier-key), its base64 public key, or a file holding either")
	fs.Var(&witnesses, "witness", "a witness verifier key whose cosignature each checkpoint must carry (repeatable)")
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("log verify: give the exported file")
	}
	logs, order, err := readExport(fs.Arg(0))
	if err != nil {
		return err
	}
	explicit := len(checkpoints) > 0
	if !explicit {
		for _, account := range order {
			p := filepath.Join(filepath.Dir(fs.Arg(0)), account+".checkpoint")
			if _, err := os.Stat(p); err == nil {
				checkpoints = append(checkpoints, p)
			}
		}
	}
	var pub ed25519.PublicKey
	if len(checkpoints) > 0 {
		if *key == "" {
			if explicit {
				return errors.New("log verify: --checkpoint needs --key, the log's verifier key")
			}
			fmt.Fprintf(stderr, "log verify: %s not checked: give --key, the log's verifier key (GET /v1/compliance-log/verifier-key)\n", strings.Join(checkpoints, ", "))
			checkpoints = nil
		} else if pub, err = witness.ParseLogKey(readIfFile(*key)); err != nil {
			return fmt.Errorf("log verify: --key: %w", err)
		}
	}
	var wvs []note.Verifier
	for _, w := range witnesses {
		v, err := fnote.NewVerifierForCosignatureV1(readIfFile(w))
		if err != nil {
			return fmt.Errorf("log verify: --witness %s: %w", w, err)
		}
		wvs = append(wvs, v)
	}
	results := map[string][]checkpointResult{}
	var failed []string
	for _, path := range checkpoints {
		account, res, err := checkCheckpoint(path, pub, wvs, logs)
		if err != nil {
			return err
		}
		if account == "" {
			failed = append(failed, fmt.Sprintf("%s: %s", path, res.Reason))
			fmt.Fprintf(stderr, "log verify: %s: %s\n", path, res.Reason)
			continue
		}
		results[account] = append(results[account], res)
		if !res.Consistent {
			failed = append(failed, fmt.Sprintf("%s: %s", path, res.Reason))
		}
	}

	broken := 0
	enc := json.NewEncoder(stdout)
	for _, account := range order {
		a := logs[account]
		res := a.chain.Result()
		out := struct {
			AccountID string `json:"accountId"`
			auditlog.Result
			TreeSize    int64              `json:"treeSize"`
			RootHash    string             `json:"rootHash,omitempty"`
			Checkpoints []checkpointResult `json:"checkpoints,omitempty"`
		}{AccountID: account, Result: res, TreeSize: a.size, Checkpoints: results[account]}
		if a.leafErr != nil {
			out.OK, out.Reason = false, "tree: "+a.leafErr.Error()
		} else if r, err := a.root(a.size); err == nil {
			out.RootHash = base64.StdEncoding.EncodeToString(r[:])
		}
		if !out.OK {
			broken++
		}
		_ = enc.Encode(out)
	}
	switch {
	case broken > 0 && len(failed) > 0:
		return fmt.Errorf("log verify: %d of %d chains broken; %s", broken, len(order), strings.Join(failed, "; "))
	case broken > 0:
		return fmt.Errorf("log verify: %d of %d chains broken", broken, len(order))
	case len(failed) > 0:
		return fmt.Errorf("log verify: %s", strings.Join(failed, "; "))
	}
	return nil
}

func readExport(path string) (map[string]*accountLog, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	logs := map[string]*accountLog{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e auditlog.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", line, err)
		}
		a, ok := logs[e.AccountID]
		if !ok {
			a = &accountLog{chain: auditlog.NewVerifier(e.AccountID)}
			logs[e.AccountID] = a
			order = append(order, e.AccountID)
		}
		a.add(e)
	}
	return logs, order, sc.Err()
}

// checkCheckpoint checks one checkpoint file: its signature by the log's
// key under its origin <prefix>/<account>, the witnesses' cosignatures,
// and that the export's tree of that account, at the checkpoint's size,
// has the checkpoint's root (the export matches or extends it). It
// returns "" for the account when the checkpoint cannot be tied to one of
// the export.
func checkCheckpoint(path string, pub ed25519.PublicKey, wvs []note.Verifier, logs map[string]*accountLog) (string, checkpointResult, error) {
	res := checkpointResult{File: path}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", res, err
	}
	c, err := parseCheckpointText(raw)
	if err != nil {
		res.Reason = "not a checkpoint: " + err.Error()
		return "", res, nil
	}
	res.TreeSize, res.RootHash = int64(c.Size), base64.StdEncoding.EncodeToString(c.Hash)
	account := c.Origin[strings.LastIndex(c.Origin, "/")+1:]
	a := logs[account]
	if a == nil || !strings.Contains(c.Origin, "/") {
		res.Reason = fmt.Sprintf("the checkpoint's origin %q is of no account in the export", c.Origin)
		return "", res, nil
	}
	vkey, err := note.NewEd25519VerifierKey(c.Origin, pub)
	if err != nil {
		res.Reason = err.Error()
		return account, res, nil
	}
	lv, err := note.NewVerifier(vkey)
	if err != nil {
		return "", res, err
	}
	n, err := note.Open(raw, note.VerifierList(append([]note.Verifier{lv}, wvs...)...))
	if err != nil {
		res.Reason = "its signature does not verify with the log's key: " + err.Error()
		return account, res, nil
	}
	if !signedBy(n, lv) {
		res.Reason = "it carries no signature of the log's key"
		return account, res, nil
	}
	for _, wv := range wvs {
		if !signedBy(n, wv) {
			res.Reason = fmt.Sprintf("it carries no cosignature of witness %s", wv.Name())
			return account, res, nil
		}
		res.Witnesses++
	}
	switch {
	case a.leafErr != nil:
		res.Reason = "the export's tree cannot be computed: " + a.leafErr.Error()
	case int64(c.Size) > a.size:
		res.Reason = fmt.Sprintf("the export holds %d entries of %s, fewer than the checkpoint's %d", a.size, account, c.Size)
	default:
		r, err := a.root(int64(c.Size))
		if err != nil {
			return "", res, err
		}
		if !bytes.Equal(r[:], c.Hash) {
			res.Reason = fmt.Sprintf("the export's tree at size %d has root %s, the checkpoint %s: the log was rewritten",
				c.Size, base64.StdEncoding.EncodeToString(r[:]), res.RootHash)
		} else {
			res.Consistent = true
		}
	}
	return account, res, nil
}

func signedBy(n *note.Note, v note.Verifier) bool {
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			return true
		}
	}
	return false
}

// checkpointText is a checkpoint's first three lines.
type checkpointText struct {
	Origin string
	Size   uint64
	Hash   []byte
}

// parseCheckpointText reads the origin, size and root of a signed
// checkpoint note, without checking its signatures.
func parseCheckpointText(msg []byte) (checkpointText, error) {
	text, _, ok := bytes.Cut(msg, []byte("\n\n"))
	if !ok {
		return checkpointText{}, errors.New("no signature lines")
	}
	lines := strings.Split(string(text), "\n")
	if len(lines) < 3 {
		return checkpointText{}, errors.New("fewer than three lines")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return checkpointText{}, fmt.Errorf("size %q", lines[1])
	}
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return checkpointText{}, fmt.Errorf("root %q", lines[2])
	}
	return checkpointText{Origin: lines[0], Size: size, Hash: h}, nil
}

// logProof prints one entry's receipt: the C2SP tlog-proof the gateway
// answers for it, with the entry's leaf data and the signed checkpoint.
func logProof(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("log proof", flag.ContinueOnError)
	fs.SetOutput(stderr)
	account := fs.String("account", "", "the account (required)")
	seq := fs.Int64("seq", 0, "the entry's seq (required)")
	size := fs.Int64("size", 0, "the size of the signed checkpoint to prove it in (default: the latest)")
	gw := gatewayFlags(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *account == "" || *seq <= 0 {
		return errors.New("log proof: --account and --seq (1 or more) are required")
	}
	path := fmt.Sprintf("/v1/compliance-log/entries/%d/proof", *seq)
	if *size > 0 {
		path += "?size=" + strconv.FormatInt(*size, 10)
	}
	body, err := gw.get(ctx, *account, path)
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("log proof: entry %d of %s is not covered by a signed checkpoint (yet)", *seq, *account)
	}
	if err != nil {
		return fmt.Errorf("log proof: %w", err)
	}
	if !bytes.HasPrefix(body, []byte("c2sp.org/tlog-proof@v1\n")) {
		return errors.New("log proof: the answer is not a c2sp.org/tlog-proof@v1")
	}
	_, err = stdout.Write(body)
	return err
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// reorder puts flags before the positional arguments, so that
// `log verify FILE --checkpoint C` reads as the usage writes it.
func reorder(args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		rest = append(rest, a)
	}
	return append(flags, rest...)
}
