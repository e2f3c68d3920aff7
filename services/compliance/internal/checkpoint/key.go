// Package checkpoint owns the compliance log's signed checkpoints
// (spec/transparency.md): the log's signing key and each account's
// verifier key, the insert-only store of the checkpoints it signed and the
// cosignatures witnesses gave them, the loop that signs every account's
// tree as it grows (never two inconsistent checkpoints of one account),
// the client of the witnesses, and the topic the checkpoints are published
// on.
package checkpoint

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// DefaultOrigin is RCM_LOG_ORIGIN's default.
const DefaultOrigin = "rcm.local/compliance"

// Key is the log's Ed25519 key and origin: it signs every account's
// checkpoints, each under the name <origin>/<account>, so that each
// account has a verifier key of its own.
type Key struct {
	origin string
	priv   ed25519.PrivateKey
}

// ErrNoKey says that RCM_LOG_SIGNING_KEY is not set.
var ErrNoKey = errors.New("RCM_LOG_SIGNING_KEY is required: the 32-byte Ed25519 seed that signs the compliance log's checkpoints, in base64, or the path of a file holding it")

// LoadKey reads the key from value, RCM_LOG_SIGNING_KEY: a 32-byte seed
// in standard base64, or the path of a file holding one (in base64, or
// the 32 bytes themselves).
func LoadKey(value, origin string) (*Key, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return nil, ErrNoKey
	}
	if origin == "" {
		origin = DefaultOrigin
	}
	if !validName(origin + "/x") {
		return nil, fmt.Errorf("RCM_LOG_ORIGIN %q: a note name holds no space or '+'", origin)
	}
	seed, ok := decodeSeed([]byte(value), false)
	if !ok {
		raw, err := os.ReadFile(value)
		if err != nil {
			return nil, fmt.Errorf("RCM_LOG_SIGNING_KEY is neither a base64 32-byte seed nor a readable file: %w", err)
		}
		if seed, ok = decodeSeed(raw, true); !ok {
			return nil, fmt.Errorf("RCM_LOG_SIGNING_KEY file %s holds no 32-byte seed (base64 or raw)", value)
		}
	}
	return NewKey(seed, origin), nil
}

// decodeSeed reads a base64 seed from raw or, when allowRaw, raw itself
// when it is a seed's length (a value of the variable never is: it could
// be a path).
func decodeSeed(raw []byte, allowRaw bool) ([]byte, bool) {
	s, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err == nil && len(s) == ed25519.SeedSize {
		return s, true
	}
	if allowRaw && len(raw) == ed25519.SeedSize {
		return raw, true
	}
	return nil, false
}

// NewKey returns the key of seed (ed25519.SeedSize bytes) for origin.
func NewKey(seed []byte, origin string) *Key {
	return &Key{origin: origin, priv: ed25519.NewKeyFromSeed(seed)}
}

// Origin is the checkpoint origin, and the key name, of account.
func (k *Key) Origin(account string) string { return k.origin + "/" + account }

// ValidAccount reports whether account can name a checkpoint origin: a
// note name holds no whitespace and no '+'.
func (k *Key) ValidAccount(account string) bool {
	return account != "" && validName(k.Origin(account))
}

func validName(name string) bool {
	return name != "" && !strings.ContainsAny(name, " \t\n\r\v\f+") && !strings.ContainsRune(name, '\u2014')
}

// VerifierKey is account's note verifier key,
// <name>+<key id hex>+<base64(0x01 ‖ public key)>.
func (k *Key) VerifierKey(account string) (string, error) {
	return note.NewEd25519VerifierKey(k.Origin(account), k.priv.Public().(ed25519.PublicKey))
}

// Verifier returns the verifier of account's checkpoints.
func (k *Key) Verifier(account string) (note.Verifier, error) {
	vkey, err := k.VerifierKey(account)
	if err != nil {
		return nil, err
	}
	return note.NewVerifier(vkey)
}

// Signer returns the signer of account's checkpoints.
func (k *Key) Signer(account string) (note.Signer, error) {
	vkey, err := k.VerifierKey(account)
	if err != nil {
		return nil, err
	}
	// The signer key is the verifier key's name and id with the seed.
	parts := strings.Split(vkey, "+")
	skey := "PRIVATE+KEY+" + parts[0] + "+" + parts[1] + "+" +
		base64.StdEncoding.EncodeToString(append([]byte{1}, k.priv.Seed()...))
	return note.NewSigner(skey)
}
