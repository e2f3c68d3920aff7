package witness

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// KeyFile is the name of the witness's private key in its state directory.
const KeyFile = "witness.key"

// VerifierKeyFile is the name of its published verifier key.
const VerifierKeyFile = "witness.vkey"

// Key is the witness's cosigning key: the signer and the verifier key
// others configure (<name>+<key id>+base64(0x04 ‖ Ed25519 public key)).
type Key struct {
	Signer      note.Signer
	VerifierKey string
}

// LoadOrCreateKey reads the witness key from dir, or on first start
// generates one named name and keeps it there (KeyFile, mode 0600, and
// VerifierKeyFile beside it). A key already there must carry name.
func LoadOrCreateKey(dir, name string) (Key, error) {
	path := filepath.Join(dir, KeyFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return createKey(dir, name)
	}
	if err != nil {
		return Key{}, err
	}
	k, err := ParseKey(strings.TrimSpace(string(raw)))
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	if name != "" && k.Signer.Name() != name {
		return Key{}, fmt.Errorf("%s is the key of %q, not %q", path, k.Signer.Name(), name)
	}
	return k, nil
}

func createKey(dir, name string) (Key, error) {
	if name == "" {
		return Key{}, errors.New("witness: a new key needs a name")
	}
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return Key{}, err
	}
	k, err := ParseKey(skey)
	if err != nil {
		return Key{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Key{}, err
	}
	// O_EXCL: two first starts on one directory keep one key.
	f, err := os.OpenFile(filepath.Join(dir, KeyFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadOrCreateKey(dir, name)
	}
	if err != nil {
		return Key{}, err
	}
	if _, err := f.WriteString(skey + "\n"); err != nil {
		f.Close()
		return Key{}, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return Key{}, err
	}
	if err := f.Close(); err != nil {
		return Key{}, err
	}
	if err := writeAtomic(filepath.Join(dir, VerifierKeyFile), []byte(k.VerifierKey+"\n")); err != nil {
		return Key{}, err
	}
	return k, nil
}

// ParseKey reads a note signer key (PRIVATE+KEY+<name>+<id>+<base64>, of
// an Ed25519 key) as a cosignature/v1 key.
func ParseKey(skey string) (Key, error) {
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return Key{}, err
	}
	seed, err := seedOf(skey)
	if err != nil {
		return Key{}, err
	}
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return Key{}, err
	}
	cosigVKey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		return Key{}, err
	}
	return Key{Signer: s, VerifierKey: cosigVKey}, nil
}

func seedOf(skey string) ([]byte, error) {
	parts := strings.SplitN(skey, "+", 5) // the base64 may hold a '+'
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if len(parts) != 5 || err != nil || len(raw) != 1+ed25519.SeedSize {
		return nil, errors.New("witness: not an Ed25519 signer key")
	}
	return raw[1:], nil
}

// ParseLogKey reads the log's Ed25519 public key given as a note verifier
// key of any of its origins (<name>+<id>+base64(0x01 ‖ key)) or as the
// standard base64 of the 32-byte key.
func ParseLogKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	// A verifier key: note.NewVerifier checks its key id against the key.
	if _, err := note.NewVerifier(s); err == nil {
		raw, err := base64.StdEncoding.DecodeString(strings.SplitN(s, "+", 3)[2])
		if err == nil && len(raw) == 1+ed25519.PublicKeySize && raw[0] == 0x01 {
			return ed25519.PublicKey(raw[1:]), nil
		}
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("the log key is neither an Ed25519 note verifier key nor the base64 of an Ed25519 public key")
	}
	return ed25519.PublicKey(raw), nil
}
