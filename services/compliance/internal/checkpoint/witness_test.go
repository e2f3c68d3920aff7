package checkpoint

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rcm-platform/rcm/pkg/witness"
	"golang.org/x/mod/sumdb/tlog"
)

// memTree is a tree of records kept in memory, for the protocol tests
// that need proofs but no ledger.
type memTree struct {
	hashes []tlog.Hash
	size   int64
}

func (m *memTree) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memTree) add(t *testing.T, records ...string) {
	t.Helper()
	for _, r := range records {
		hs, err := tlog.StoredHashes(m.size, []byte(r), m)
		if err != nil {
			t.Fatal(err)
		}
		m.hashes = append(m.hashes, hs...)
		m.size++
	}
}

func (m *memTree) root(t *testing.T) tlog.Hash {
	t.Helper()
	h, err := tlog.TreeHash(m.size, m)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (m *memTree) prove(t *testing.T, from int64) tlog.TreeProof {
	t.Helper()
	p, err := tlog.ProveTree(m.size, from, m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startWitness runs a witness of k's log over loopback and returns its
// RCM_LOG_WITNESSES item.
func startWitness(t *testing.T, k *Key, name string) string {
	t.Helper()
	wk, err := witness.LoadOrCreateKey(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.New(witness.Config{
		StateDir: t.TempDir(), Signer: wk.Signer, OriginPrefix: k.origin,
		LogKey: k.priv.Public().(ed25519.PublicKey),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	t.Cleanup(srv.Close)
	return srv.URL + "|" + wk.VerifierKey
}

func parseOne(t *testing.T, item string) *Witness {
	t.Helper()
	ws, err := ParseWitnesses([]string{item})
	if err != nil {
		t.Fatal(err)
	}
	return ws[0]
}

// TestWitnessClient: the client speaks add-checkpoint to our witness
// over HTTP and verifies what it answers: a cosignature of the right key,
// 409 with the witness's size, and 422 for a rewritten history.
func TestWitnessClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k := NewKey(seed(t), "rcm.test/compliance")
	w := parseOne(t, startWitness(t, k, "witness.test/w1"))
	client := &http.Client{}
	tree := &memTree{}
	tree.add(t, "a")
	cp1, _ := k.Sign("org_a", 1, tree.root(t))
	line, err := w.AddCheckpoint(ctx, client, 0, nil, cp1.Note)
	if err != nil {
		t.Fatalf("first checkpoint: %v", err)
	}
	if !w.verifies(cp1.Note, line) {
		t.Fatalf("cosignature %q does not verify", line)
	}

	tree.add(t, "b", "c")
	cp3, _ := k.Sign("org_a", 3, tree.root(t))
	_, err = w.AddCheckpoint(ctx, client, 0, nil, cp3.Note)
	if r, ok := IsRefusal(err); !ok || r.Status != http.StatusConflict || r.Size != 1 {
		t.Fatalf("old 0 after 1: got %v, want 409 with size 1", err)
	}
	if _, err := w.AddCheckpoint(ctx, client, 1, tree.prove(t, 1), cp3.Note); err != nil {
		t.Fatalf("old 1 with its proof: %v", err)
	}

	// Another history of the same account, one record longer.
	forged := &memTree{}
	forged.add(t, "a", "B", "c", "d")
	cp4, _ := k.Sign("org_a", 4, forged.root(t))
	_, err = w.AddCheckpoint(ctx, client, 3, forged.prove(t, 3), cp4.Note)
	if r, ok := IsRefusal(err); !ok || r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("a rewritten history: got %v, want 422", err)
	}

	// A witness answering with a key other than the configured one.
	other := parseOne(t, startWitness(t, k, "witness.test/w2"))
	mismatch := &Witness{URL: other.URL, verifier: w.verifier}
	_, err = mismatch.AddCheckpoint(ctx, client, 0, nil, cp1.Note)
	if r, ok := IsRefusal(err); !ok || r.Reason != "bad_cosignature" {
		t.Fatalf("a cosignature of another key: got %v, want bad_cosignature", err)
	}
}
