package checkpoint

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func seed(t *testing.T) []byte {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLoadKey: the variable holds the seed in base64 or the path of a
// file holding it; anything else, or nothing, refuses to start.
func TestLoadKey(t *testing.T) {
	t.Parallel()
	s := seed(t)
	b64 := base64.StdEncoding.EncodeToString(s)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	want := ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)
	for name, value := range map[string]string{
		"base64":          b64,
		"base64 file":     write("b64", []byte(b64+"\n")),
		"raw file":        write("raw", s),
		"padded variable": "  " + b64 + "\n",
	} {
		k, err := LoadKey(value, "")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := k.priv.Public().(ed25519.PublicKey); !got.Equal(want) {
			t.Errorf("%s: got public key %x, want %x", name, got, want)
		}
		if got := k.Origin("org_1"); got != "rcm.local/compliance/org_1" {
			t.Errorf("%s: origin %q, want rcm.local/compliance/org_1", name, got)
		}
	}
	if _, err := LoadKey("", ""); !errors.Is(err, ErrNoKey) {
		t.Errorf("no key: got %v, want ErrNoKey", err)
	}
	for name, value := range map[string]string{
		"short seed":   base64.StdEncoding.EncodeToString(s[:16]),
		"missing file": filepath.Join(dir, "none"),
		"file of junk": write("junk", []byte("not a key")),
		// 32 characters, a seed's length: still a path, never the seed.
		"missing 32-char path": "/run/secrets/rcm_log_signing_kez",
	} {
		if _, err := LoadKey(value, ""); err == nil {
			t.Errorf("%s: loaded, want an error", name)
		}
	}
	if _, err := LoadKey(b64, "bad origin"); err == nil {
		t.Error("an origin with a space: loaded, want an error")
	}
}

// TestCheckpointVerifies: a checkpoint verifies with golang.org/x/mod's
// note package given only the account's published verifier key, and
// with no other account's.
func TestCheckpointVerifies(t *testing.T) {
	t.Parallel()
	k := NewKey(seed(t), "rcm.test/compliance")
	root := tlog.RecordHash([]byte("leaf"))
	cp, err := k.Sign("org_a", 1, root)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := k.VerifierKey("org_a")
	if err != nil {
		t.Fatal(err)
	}
	// The key itself is standard base64, which may hold a "+" too.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 || parts[0] != "rcm.test/compliance/org_a" || len(parts[1]) != 8 {
		t.Fatalf("verifier key %q: want <name>+<8 hex>+<key>", vkey)
	}
	if raw, err := base64.StdEncoding.DecodeString(parts[2]); err != nil || len(raw) != 33 || raw[0] != 1 {
		t.Fatalf("verifier key %q: want base64(0x01 ‖ 32-byte key)", vkey)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cp.Note, note.VerifierList(v))
	if err != nil {
		t.Fatalf("open: %v\n%s", err, cp.Note)
	}
	wantText := "rcm.test/compliance/org_a\n1\n" + base64.StdEncoding.EncodeToString(root[:]) + "\n"
	if n.Text != wantText {
		t.Errorf("body %q, want %q", n.Text, wantText)
	}
	other, _ := k.VerifierKey("org_b")
	ov, _ := note.NewVerifier(other)
	if _, err := note.Open(cp.Note, note.VerifierList(ov)); err == nil {
		t.Error("org_b's key verified org_a's checkpoint")
	}
	size, gotRoot, err := k.Open("org_a", cp.Note)
	if err != nil || size != 1 || gotRoot != root {
		t.Errorf("Open: %d %v %v, want 1 %v", size, gotRoot, err, root)
	}
	if _, _, err := k.Open("org_b", cp.Note); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Open as org_b: %v, want ErrNotOurs", err)
	}
	forged := NewKey(seed(t), "rcm.test/compliance")
	fcp, _ := forged.Sign("org_a", 1, root)
	if _, _, err := k.Open("org_a", fcp.Note); !errors.Is(err, ErrNotOurs) {
		t.Errorf("Open of another key's note: %v, want ErrNotOurs", err)
	}
}
