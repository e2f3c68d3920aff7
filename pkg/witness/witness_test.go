package witness

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const prefix = "rcm.test/compliance"

// testLog is a log of one origin whose history tests write and rewrite:
// records, the tree's stored hashes (golang.org/x/mod/sumdb/tlog, the
// log's implementation; the witness checks with another), and the key.
type testLog struct {
	t      *testing.T
	origin string
	key    ed25519.PrivateKey
	hashes []tlog.Hash
	size   int64
}

func newTestLog(t *testing.T, key ed25519.PrivateKey, account string, records ...string) *testLog {
	l := &testLog{t: t, origin: prefix + "/" + account, key: key}
	for _, r := range records {
		l.append(r)
	}
	return l
}

func (l *testLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = l.hashes[x]
	}
	return out, nil
}

func (l *testLog) append(record string) {
	hs, err := tlog.StoredHashes(l.size, []byte(record), l)
	if err != nil {
		l.t.Fatal(err)
	}
	l.hashes = append(l.hashes, hs...)
	l.size++
}

func (l *testLog) root(n int64) tlog.Hash {
	h, err := tlog.TreeHash(n, l)
	if err != nil {
		l.t.Fatal(err)
	}
	return h
}

// checkpoint is the log's signed checkpoint at size n.
func (l *testLog) checkpoint(n int64) []byte {
	return l.signed(n, l.key)
}

func (l *testLog) signed(n int64, key ed25519.PrivateKey) []byte {
	text := fmt.Sprintf("%s\n%d\n%s\n", l.origin, n, base64.StdEncoding.EncodeToString(l.rootOrEmpty(n)))
	return signNote(l.t, text, l.origin, key)
}

func (l *testLog) rootOrEmpty(n int64) []byte {
	if n == 0 {
		empty := sha256.Sum256(nil) // RFC 6962: the empty tree's root
		return empty[:]
	}
	h := l.root(n)
	return h[:]
}

func signNote(t *testing.T, text, name string, key ed25519.PrivateKey) []byte {
	t.Helper()
	skey := signerKey(t, name, key)
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// signerKey encodes key as a note signer key under name.
func signerKey(t *testing.T, name string, key ed25519.PrivateKey) string {
	t.Helper()
	vkey, err := note.NewEd25519VerifierKey(name, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.Split(vkey, "+")[1]
	return "PRIVATE+KEY+" + name + "+" + id + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, key.Seed()...))
}

// body is an add-checkpoint request from old to n, with the log's own proof.
func (l *testLog) body(old, n int64) []byte {
	var proof tlog.TreeProof
	if old > 0 && old < n {
		var err error
		proof, err = tlog.ProveTree(n, old, l)
		if err != nil {
			l.t.Fatal(err)
		}
	}
	return requestBody(old, proof, l.checkpoint(n))
}

func requestBody(old int64, proof []tlog.Hash, checkpoint []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(checkpoint)
	return b.Bytes()
}

type fixture struct {
	t      *testing.T
	dir    string
	logKey ed25519.PrivateKey
	key    Key
	reg    *prometheus.Registry
	w      *Witness
	srv    *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	_, logKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, dir: t.TempDir(), logKey: logKey}
	f.start()
	return f
}

// start serves a new Witness over the fixture's directory on loopback.
func (f *fixture) start() {
	f.t.Helper()
	if f.srv != nil {
		f.srv.Close()
	}
	k, err := LoadOrCreateKey(f.dir, "witness.rcm.test/w1")
	if err != nil {
		f.t.Fatal(err)
	}
	f.key = k
	f.reg = prometheus.NewRegistry()
	f.w, err = New(Config{StateDir: f.dir, Signer: k.Signer, OriginPrefix: prefix,
		LogKey: f.logKey.Public().(ed25519.PublicKey), Registerer: f.reg})
	if err != nil {
		f.t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.w.Handler())
	f.t.Cleanup(f.srv.Close)
}

type answer struct {
	status int
	ctype  string
	body   string
}

func (f *fixture) post(body []byte) answer {
	f.t.Helper()
	resp, err := http.Post(f.srv.URL+"/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header.Get("Content-Type"), string(b)}
}

// cosigned checks that a 200 answer is a cosignature/v1 of checkpoint by
// the witness's published verifier key, the way a log client checks it.
func (f *fixture) cosigned(a answer, checkpoint []byte) {
	f.t.Helper()
	if a.status != http.StatusOK {
		f.t.Fatalf("status %d %q, want 200", a.status, a.body)
	}
	if !strings.HasPrefix(a.body, "— witness.rcm.test/w1 ") || !strings.HasSuffix(a.body, "\n") {
		f.t.Fatalf("body %q is not a signature line", a.body)
	}
	v, err := fnote.NewVerifierForCosignatureV1(f.key.VerifierKey)
	if err != nil {
		f.t.Fatal(err)
	}
	n, err := note.Open(append(bytes.Clone(checkpoint), a.body...), note.VerifierList(v))
	if err != nil {
		f.t.Fatalf("cosignature does not verify: %v", err)
	}
	ts, err := fnote.CoSigV1Timestamp(n.Sigs[0])
	if err != nil || ts.Unix() == 0 {
		f.t.Fatalf("cosignature timestamp %v %v", ts, err)
	}
}

func (f *fixture) rejected(reason string) float64 {
	return testutil.ToFloat64(f.w.rejected.WithLabelValues(reason))
}

func TestAddCheckpointAnswersEveryStatusOfTheProtocol(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := newTestLog(t, f.logKey, "org_1", "a", "b", "c", "d", "e", "f", "g")

	// First contact: old 0, no proof.
	f.cosigned(f.post(l.body(0, 3)), l.checkpoint(3))
	// The next one, with the log's consistency proof from 3.
	f.cosigned(f.post(l.body(3, 7)), l.checkpoint(7))
	// The same checkpoint again (old = size, same root).
	f.cosigned(f.post(l.body(7, 7)), l.checkpoint(7))
	if got := testutil.ToFloat64(f.w.cosigned); got != 3 {
		t.Fatalf("cosigned_total %v, want 3", got)
	}

	// 409: old is not the latest cosigned size, which the body gives.
	a := f.post(l.body(3, 7))
	if a.status != http.StatusConflict || a.ctype != SizeContentType || a.body != "7\n" {
		t.Fatalf("stale old: %+v, want 409 %s \"7\\n\"", a, SizeContentType)
	}
	// 400: old exceeds the checkpoint's size.
	if a := f.post(requestBody(9, nil, l.checkpoint(7))); a.status != http.StatusBadRequest {
		t.Fatalf("old > size: %+v, want 400", a)
	}
	// 403: signed by another key under the origin's name, or not at all by the log.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	l.append("h")
	if a := f.post(requestBody(7, proofOf(t, l, 7, 8), l.signed(8, other))); a.status != http.StatusForbidden {
		t.Fatalf("other key: %+v, want 403", a)
	}
	forged := forgeSignature(t, l.checkpoint(8))
	if a := f.post(requestBody(7, proofOf(t, l, 7, 8), forged)); a.status != http.StatusForbidden {
		t.Fatalf("bad signature: %+v, want 403", a)
	}
	// 404: an origin outside the prefix.
	stranger := &testLog{t: t, origin: "example.com/log", key: f.logKey}
	stranger.append("x")
	if a := f.post(stranger.body(0, 1)); a.status != http.StatusNotFound {
		t.Fatalf("unknown origin: %+v, want 404", a)
	}
	bare := &testLog{t: t, origin: prefix + "/", key: f.logKey}
	bare.append("x")
	if a := f.post(bare.body(0, 1)); a.status != http.StatusNotFound {
		t.Fatalf("prefix without an account: %+v, want 404", a)
	}
	// 422: a proof that does not verify.
	bad := proofOf(t, l, 7, 8)
	bad[0][0] ^= 1
	if a := f.post(requestBody(7, bad, l.checkpoint(8))); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("bad proof: %+v, want 422", a)
	}
	// 422: a proof from size 0 must be empty; a checkpoint of size 0 has the empty root.
	fresh := newTestLog(t, f.logKey, "org_2", "a", "b")
	if a := f.post(requestBody(0, proofOf(t, fresh, 1, 2), fresh.checkpoint(2))); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("proof from 0: %+v, want 422", a)
	}
	zero := signNote(t, fresh.origin+"\n0\n"+base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n", fresh.origin, f.logKey)
	if a := f.post(requestBody(0, nil, zero)); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("size 0 with a root other than the empty tree's: %+v, want 422", a)
	}
	f.cosigned(f.post(fresh.body(0, 0)), fresh.checkpoint(0))
	// 400: malformed requests.
	for name, body := range map[string]string{
		"no old line":        "\n" + string(l.checkpoint(8)),
		"leading zero":       "old 07\n\n" + string(l.checkpoint(8)),
		"proof not a hash":   "old 7\nnot-base64\n\n" + string(l.checkpoint(8)),
		"no empty line":      "old 7\n",
		"not a checkpoint":   "old 7\n\nhello\n\n— x AAAA\n",
		"64 proof lines":     "old 7\n" + strings.Repeat(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n", 64) + "\n" + string(l.checkpoint(8)),
		"checkpoint no sigs": "old 7\n\n" + fmt.Sprintf("%s\n8\n%s\n", l.origin, base64.StdEncoding.EncodeToString(l.rootOrEmpty(8))),
	} {
		if a := f.post([]byte(body)); a.status != http.StatusBadRequest {
			t.Errorf("%s: %+v, want 400", name, a)
		}
	}
	// Nothing refused moved the state: the next honest checkpoint is cosigned.
	f.cosigned(f.post(l.body(7, 8)), l.checkpoint(8))

	for reason, want := range map[string]float64{
		ReasonConflict: 1, ReasonOldTooLarge: 1, ReasonSignature: 2, ReasonUnknownOrigin: 2,
		ReasonInconsistent: 3, ReasonMalformed: 7,
	} {
		if got := f.rejected(reason); got != want {
			t.Errorf("rejected_total{reason=%q} %v, want %v", reason, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(f.reg, "rcm_witness_cosigned_total", "rcm_witness_rejected_total"); err != nil || n != 8 {
		t.Errorf("metrics gathered %d %v, want 8 series", n, err)
	}
}

// forgeSignature flips a bit of the note's last signature, past its key id.
func forgeSignature(t *testing.T, msg []byte) []byte {
	t.Helper()
	i := bytes.LastIndex(msg, []byte(" ")) + 1
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(msg[i:])))
	if err != nil {
		t.Fatal(err)
	}
	sig[10] ^= 1
	return append(bytes.Clone(msg[:i]), base64.StdEncoding.EncodeToString(sig)+"\n"...)
}

func proofOf(t *testing.T, l *testLog, old, n int64) []tlog.Hash {
	t.Helper()
	p, err := tlog.ProveTree(n, old, l)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRewrittenHistoryIsNotCosigned: the log's history is rewritten (entry
// 2 edited, every later one re-appended) after the witness cosigned size 4.
func TestRewrittenHistoryIsNotCosigned(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	honest := newTestLog(t, f.logKey, "org_1", "a", "b", "c", "d")
	f.cosigned(f.post(honest.body(0, 4)), honest.checkpoint(4))

	rewritten := newTestLog(t, f.logKey, "org_1", "a", "B", "c", "d", "e", "f")
	// Same size, another root.
	if a := f.post(rewritten.body(4, 4)); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("same size, other root: %+v, want 422", a)
	}
	// Larger, with the rewritten log's own proof from 4.
	if a := f.post(rewritten.body(4, 6)); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("rewritten extension: %+v, want 422", a)
	}
	// Pretending to be new to the witness.
	if a := f.post(rewritten.body(0, 6)); a.status != http.StatusConflict || a.body != "4\n" {
		t.Fatalf("rewritten from 0: %+v, want 409 4", a)
	}
	if got := f.rejected(ReasonInconsistent); got != 2 {
		t.Fatalf("inconsistent %v, want 2", got)
	}
	// The honest log goes on.
	honest.append("e")
	f.cosigned(f.post(honest.body(4, 5)), honest.checkpoint(5))
}

// TestStateSurvivesRestart: a new Witness over the same directory knows
// what the last one cosigned, and keeps its key.
func TestStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := newTestLog(t, f.logKey, "org_1", "a", "b", "c")
	f.cosigned(f.post(l.body(0, 3)), l.checkpoint(3))
	vkey := f.key.VerifierKey

	f.start()
	if f.key.VerifierKey != vkey {
		t.Fatalf("key after restart %s, want %s", f.key.VerifierKey, vkey)
	}
	if a := f.post(l.body(0, 3)); a.status != http.StatusConflict || a.body != "3\n" {
		t.Fatalf("after restart: %+v, want 409 3", a)
	}
	rewritten := newTestLog(t, f.logKey, "org_1", "a", "B", "c")
	if a := f.post(rewritten.body(3, 3)); a.status != http.StatusUnprocessableEntity {
		t.Fatalf("rewritten after restart: %+v, want 422", a)
	}
	l.append("d")
	f.cosigned(f.post(l.body(3, 4)), l.checkpoint(4))

	// Monitors read the latest cosigned checkpoint by the origin's hash.
	resp, err := http.Get(f.srv.URL + "/" + OriginHash(l.origin) + "/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cosigV, _ := fnote.NewVerifierForCosignatureV1(vkey)
	logV, _ := note.NewVerifier(mustVKey(t, l.origin, f.logKey))
	n, err := note.Open(got, note.VerifierList(cosigV, logV))
	if err != nil || len(n.Sigs) != 2 || !strings.HasPrefix(n.Text, l.origin+"\n4\n") {
		t.Fatalf("monitoring checkpoint %q: %v", got, err)
	}
	if resp, _ := http.Get(f.srv.URL + "/" + OriginHash("rcm.test/compliance/nobody") + "/checkpoint"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("never cosigned: %d, want 404", resp.StatusCode)
	}
}

func mustVKey(t *testing.T, name string, key ed25519.PrivateKey) string {
	t.Helper()
	v, err := note.NewEd25519VerifierKey(name, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestConcurrentAddsNeverCosignTwoHistories: clients of two forked
// histories of one origin (they differ from entry 2 on) race to get
// checkpoints cosigned, each retrying from the size a 409 gives. Every
// checkpoint the witness cosigned belongs to one history, and its state
// is the largest of them.
func TestConcurrentAddsNeverCosignTwoHistories(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	const size = 24
	histories := [2]*testLog{newTestLog(t, f.logKey, "org_1"), newTestLog(t, f.logKey, "org_1")}
	for i := range size {
		histories[0].append("r" + strconv.Itoa(i))
		if i == 1 {
			histories[1].append("forked")
		} else {
			histories[1].append("r" + strconv.Itoa(i))
		}
	}
	type cosign struct {
		history int
		size    int64
	}
	var (
		mu  sync.Mutex
		won []cosign
		wg  sync.WaitGroup
	)
	for g := range 8 {
		wg.Go(func() {
			l := histories[g%2]
			old := int64(0)
			for n := int64(2 + g/2); n <= size; n += 4 {
				for range 4 { // a few rounds of 409 and retry
					if old > n {
						break
					}
					var proof []tlog.Hash
					if old > 0 && old < n {
						proof = proofOf(t, l, old, n)
					}
					resp, err := http.Post(f.srv.URL+"/add-checkpoint", "text/plain", bytes.NewReader(requestBody(old, proof, l.checkpoint(n))))
					if err != nil {
						t.Error(err)
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						mu.Lock()
						won = append(won, cosign{g % 2, n})
						mu.Unlock()
						old = n
						break
					}
					if resp.StatusCode != http.StatusConflict {
						break // 422: the other history holds the witness
					}
					old, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				}
			}
		})
	}
	wg.Wait()
	if len(won) == 0 {
		t.Fatal("nothing cosigned")
	}
	var largest int64
	for _, c := range won {
		if c.history != won[0].history {
			t.Fatalf("cosigned checkpoints of both histories: %v", won)
		}
		largest = max(largest, c.size)
	}
	if a := f.post(requestBody(0, nil, histories[won[0].history].checkpoint(largest))); a.body != strconv.FormatInt(largest, 10)+"\n" {
		t.Fatalf("state %q, want the largest cosigned size %d (cosigned %v)", a.body, largest, won)
	}
	t.Logf("%d checkpoints cosigned, all of history %d, up to size %d", len(won), won[0].history, largest)
}
