package checkpoint

import (
	"errors"
	"fmt"
	"strings"

	tlogfmt "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is one signed checkpoint of an account's tree, with the
// cosignatures witnesses gave it.
type Checkpoint struct {
	Account string
	Size    int64
	Root    tlog.Hash
	// Note is the signed note exactly as the log signed and stored it:
	// the C2SP tlog-checkpoint body and the log's signature line.
	Note []byte
	// Cosignatures are witness signature lines ("— <name> <base64>\n"),
	// in the order of RCM_LOG_WITNESSES.
	Cosignatures []string
}

// Text is the checkpoint as served and published: the signed note with
// its cosignature lines after the log's.
func (c Checkpoint) Text() []byte {
	out := append([]byte(nil), c.Note...)
	for _, line := range c.Cosignatures {
		out = append(out, line...)
	}
	return out
}

// Sign returns the checkpoint of account's tree of size with root,
// signed by k.
func (k *Key) Sign(account string, size int64, root tlog.Hash) (Checkpoint, error) {
	signer, err := k.Signer(account)
	if err != nil {
		return Checkpoint{}, err
	}
	body := tlogfmt.Checkpoint{Origin: k.Origin(account), Size: uint64(size), Hash: root[:]}.Marshal()
	msg, err := note.Sign(&note.Note{Text: string(body)}, signer)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("sign checkpoint %s/%d: %w", account, size, err)
	}
	return Checkpoint{Account: account, Size: size, Root: root, Note: msg}, nil
}

// ErrNotOurs says that a note is not a checkpoint of the account signed
// by the log's key.
var ErrNotOurs = errors.New("not a checkpoint of this account signed by the log")

// Open checks that msg is a checkpoint of account signed with k, and
// returns its size and root. Signatures of other keys (a witness's
// cosignatures) are allowed and ignored.
func (k *Key) Open(account string, msg []byte) (size int64, root tlog.Hash, err error) {
	v, err := k.Verifier(account)
	if err != nil {
		return 0, tlog.Hash{}, err
	}
	cp, _, _, err := tlogfmt.ParseCheckpoint(msg, k.Origin(account), v)
	if err != nil {
		return 0, tlog.Hash{}, fmt.Errorf("%w: %v", ErrNotOurs, err)
	}
	if len(cp.Hash) != tlog.HashSize || cp.Size > 1<<62 {
		return 0, tlog.Hash{}, fmt.Errorf("%w: bad size or root", ErrNotOurs)
	}
	copy(root[:], cp.Hash)
	return int64(cp.Size), root, nil
}

// signatureLines returns the signature lines of a witness's answer: each
// line that starts with the em dash of a note signature.
func signatureLines(body string) []string {
	var out []string
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "\u2014 ") {
			if !strings.HasSuffix(line, "\n") {
				line += "\n"
			}
			out = append(out, line)
		}
	}
	return out
}
