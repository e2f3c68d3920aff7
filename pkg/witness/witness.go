// Package witness is a transparency log witness in the C2SP tlog-witness
// protocol (https://c2sp.org/tlog-witness): it cosigns a log's checkpoint
// only when it is consistent with the latest one it cosigned for that
// origin, so that a log that rewrites its history cannot get the rewritten
// checkpoint cosigned.
//
// The witness serves a multi-tenant log: it knows every origin
// <prefix>/<name> whose checkpoint is signed, under that origin as the key
// name, by the one configured Ed25519 log public key (the compliance log
// signs each account's checkpoint under <RCM_LOG_ORIGIN>/<accountId>).
//
// Its cosignatures are C2SP tlog-cosignature cosignature/v1 (Ed25519,
// signature type 0x04), made with github.com/transparency-dev/formats/note.
// Consistency proofs are checked with github.com/transparency-dev/merkle, an
// implementation apart from the log's.
//
// State: one file per origin under the state directory, holding the latest
// checkpoint it cosigned with its cosignature. The file is replaced
// atomically (temporary file, fsync, rename, fsync of the directory) under
// the origin's lock, before the cosignature is answered; so two concurrent
// requests for one origin are checked and stored one after the other, and a
// restart finds what was last cosigned. One process serves one state
// directory.
package witness

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// MaxBody bounds an add-checkpoint request: an old size line, at most 63
// proof lines and a checkpoint with its signatures fit well within it.
const MaxBody = 64 << 10

// maxProofLines is the protocol's bound on consistency proof lines.
const maxProofLines = 63

// SizeContentType is the type of a 409 answer's body.
const SizeContentType = "text/x.tlog.size"

// Rejection reasons, the values of rcm_witness_rejected_total's label.
const (
	ReasonMalformed     = "malformed"      // 400: the request cannot be parsed
	ReasonUnknownOrigin = "unknown_origin" // 404
	ReasonSignature     = "signature"      // 403: no valid signature of the log
	ReasonOldTooLarge   = "old_too_large"  // 400: old exceeds the checkpoint's size
	ReasonConflict      = "conflict"       // 409: old is not the latest cosigned size
	ReasonInconsistent  = "inconsistent"   // 422: the proof does not verify, or another root at the same size
	ReasonStore         = "store"          // 500: the state could not be stored
)

// Config configures a Witness.
type Config struct {
	// StateDir holds one file per origin.
	StateDir string
	// Signer makes the cosignatures (see NewSigner).
	Signer note.Signer
	// OriginPrefix is the log's origin without the account: the witness
	// knows <OriginPrefix>/<name> for any non-empty name.
	OriginPrefix string
	// LogKey is the log's Ed25519 public key, the one it signs every
	// origin's checkpoints with.
	LogKey ed25519.PublicKey
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives refusals and failures; nil discards.
	Logger *slog.Logger
}

// Witness is the tlog-witness add-checkpoint handler with its state.
type Witness struct {
	cfg      Config
	logger   *slog.Logger
	cosigned prometheus.Counter
	rejected *prometheus.CounterVec

	mu      sync.Mutex
	origins map[string]*origin
}

// origin is one log's state: the latest checkpoint cosigned for it.
type origin struct {
	mu     sync.Mutex
	loaded bool
	size   uint64
	root   []byte
}

// New returns a Witness over cfg.StateDir, creating the directory.
func New(cfg Config) (*Witness, error) {
	if cfg.Signer == nil {
		return nil, errors.New("witness: no signer")
	}
	if len(cfg.LogKey) != ed25519.PublicKeySize {
		return nil, errors.New("witness: the log key is not an Ed25519 public key")
	}
	cfg.OriginPrefix = strings.TrimSuffix(cfg.OriginPrefix, "/")
	if cfg.OriginPrefix == "" {
		return nil, errors.New("witness: no origin prefix")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("witness: state dir: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Witness{
		cfg:    cfg,
		logger: logger,
		cosigned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rcm_witness_cosigned_total",
			Help: "Checkpoints the witness cosigned.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rcm_witness_rejected_total",
			Help: "add-checkpoint requests the witness refused, by reason.",
		}, []string{"reason"}),
		origins: map[string]*origin{},
	}
	for _, r := range []string{ReasonMalformed, ReasonUnknownOrigin, ReasonSignature, ReasonOldTooLarge, ReasonConflict, ReasonInconsistent, ReasonStore} {
		w.rejected.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(w.cosigned); err != nil {
			return nil, err
		}
		if err := cfg.Registerer.Register(w.rejected); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Handler serves POST /add-checkpoint and, for monitors, GET
// /<hex SHA-256 of the origin>/checkpoint: the latest cosigned checkpoint
// with the log's signatures and the witness's cosignature.
func (w *Witness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add-checkpoint", w.addCheckpoint)
	mux.HandleFunc("GET /{hash}/checkpoint", w.latest)
	return mux
}

// refusal is an answer other than 200.
type refusal struct {
	status int
	reason string
	msg    string
	body   string // the body when it is not msg (409)
}

func (w *Witness) addCheckpoint(rw http.ResponseWriter, r *http.Request) {
	sigs, ref := w.add(r)
	if ref != nil {
		w.rejected.WithLabelValues(ref.reason).Inc()
		if ref.status == http.StatusConflict {
			rw.Header().Set("Content-Type", SizeContentType)
			rw.WriteHeader(ref.status)
			_, _ = io.WriteString(rw, ref.body)
			return
		}
		http.Error(rw, ref.msg, ref.status)
		return
	}
	w.cosigned.Inc()
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = rw.Write(sigs)
}

// request is a parsed add-checkpoint body.
type request struct {
	old   uint64
	proof [][]byte
	note  []byte // the signed checkpoint
}

func parseRequest(body []byte) (request, error) {
	var req request
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return req, errors.New("no old size line")
	}
	n, found := strings.CutPrefix(string(line), "old ")
	if !found {
		return req, errors.New("the first line is not old <size>")
	}
	old, err := strconv.ParseUint(n, 10, 64)
	if err != nil || strconv.FormatUint(old, 10) != n {
		return req, fmt.Errorf("old size %q is not a decimal without leading zeros", n)
	}
	req.old = old
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return req, errors.New("no empty line before the checkpoint")
		}
		if len(line) == 0 {
			break
		}
		if len(req.proof) == maxProofLines {
			return req, fmt.Errorf("more than %d proof lines", maxProofLines)
		}
		h, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil || len(h) != sha256.Size {
			return req, fmt.Errorf("proof line %d is not a base64 SHA-256 hash", len(req.proof)+1)
		}
		req.proof = append(req.proof, h)
	}
	req.note = rest
	return req, nil
}

// add checks the request and, when it passes, cosigns and stores the
// checkpoint; it returns the signature lines to answer.
func (w *Witness) add(r *http.Request) ([]byte, *refusal) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	if err != nil {
		return nil, &refusal{status: http.StatusBadRequest, reason: ReasonMalformed, msg: "cannot read the body: " + err.Error()}
	}
	req, err := parseRequest(body)
	if err != nil {
		return nil, &refusal{status: http.StatusBadRequest, reason: ReasonMalformed, msg: err.Error()}
	}
	// The checkpoint's text, to learn its origin before trusting it.
	text, err := noteText(req.note)
	if err != nil {
		return nil, &refusal{status: http.StatusBadRequest, reason: ReasonMalformed, msg: "the checkpoint is not a signed note: " + err.Error()}
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(text)); err != nil {
		return nil, &refusal{status: http.StatusBadRequest, reason: ReasonMalformed, msg: err.Error()}
	}
	if len(cp.Hash) != sha256.Size {
		return nil, &refusal{status: http.StatusBadRequest, reason: ReasonMalformed, msg: "the checkpoint's root is not a SHA-256 hash"}
	}
	v, ok := w.logVerifier(cp.Origin)
	if !ok {
		return nil, &refusal{status: http.StatusNotFound, reason: ReasonUnknownOrigin, msg: "unknown origin " + strconv.Quote(cp.Origin)}
	}
	if _, err := note.Open(req.note, note.VerifierList(v)); err != nil {
		w.logger.Warn("checkpoint not signed by the log", slog.String("origin", cp.Origin), slog.String("err", err.Error()))
		return nil, &refusal{status: http.StatusForbidden, reason: ReasonSignature, msg: "the checkpoint has no valid signature of the log: " + err.Error()}
	}
	if req.old > cp.Size {
		return nil, &refusal{status: http.StatusBadRequest, reason: ReasonOldTooLarge, msg: fmt.Sprintf("old size %d exceeds the checkpoint's size %d", req.old, cp.Size)}
	}

	o := w.origin(cp.Origin)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := w.load(cp.Origin, o); err != nil {
		w.logger.Error("witness state unreadable", slog.String("origin", cp.Origin), slog.String("err", err.Error()))
		return nil, &refusal{status: http.StatusInternalServerError, reason: ReasonStore, msg: "state unreadable"}
	}
	if req.old != o.size {
		w.logger.Warn("checkpoint refused: old size is not the latest cosigned", slog.String("origin", cp.Origin),
			slog.Uint64("old", req.old), slog.Uint64("latest", o.size), slog.Uint64("size", cp.Size))
		return nil, &refusal{status: http.StatusConflict, reason: ReasonConflict, body: strconv.FormatUint(o.size, 10) + "\n"}
	}
	if err := consistent(req, cp, o); err != nil {
		w.logger.Error("checkpoint refused: inconsistent with the latest cosigned", slog.String("origin", cp.Origin),
			slog.Uint64("latest", o.size), slog.Uint64("size", cp.Size), slog.String("err", err.Error()))
		return nil, &refusal{status: http.StatusUnprocessableEntity, reason: ReasonInconsistent, msg: err.Error()}
	}

	cosig, err := note.Sign(&note.Note{Text: text}, w.cfg.Signer)
	if err != nil {
		return nil, &refusal{status: http.StatusInternalServerError, reason: ReasonStore, msg: "cannot cosign"}
	}
	// note.Sign returns the text, an empty line, then the signature line.
	sigs := cosig[len(text)+1:]
	stored := append(bytes.TrimRight(req.note, "\n"), '\n')
	stored = append(stored, sigs...)
	if err := writeAtomic(w.path(cp.Origin), stored); err != nil {
		w.logger.Error("witness state not stored", slog.String("origin", cp.Origin), slog.String("err", err.Error()))
		return nil, &refusal{status: http.StatusInternalServerError, reason: ReasonStore, msg: "state not stored"}
	}
	o.size, o.root = cp.Size, cp.Hash
	return sigs, nil
}

// consistent reports whether checkpoint cp, with the request's proof from
// the latest cosigned size (req.old == o.size), extends what o holds.
func consistent(req request, cp log.Checkpoint, o *origin) error {
	empty := rfc6962.DefaultHasher.EmptyRoot()
	switch {
	case cp.Size == 0 && !bytes.Equal(cp.Hash, empty):
		return errors.New("a checkpoint of size 0 must have the empty tree's root")
	case req.old == 0 && len(req.proof) > 0:
		return errors.New("a proof from size 0 must be empty")
	case req.old == 0:
		return nil
	case req.old == cp.Size:
		if len(req.proof) > 0 {
			return errors.New("a proof between equal sizes must be empty")
		}
		if !bytes.Equal(cp.Hash, o.root) {
			return fmt.Errorf("another root at size %d than the one cosigned", cp.Size)
		}
		return nil
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, req.old, cp.Size, req.proof, o.root, cp.Hash); err != nil {
		return fmt.Errorf("consistency proof from %d to %d: %w", req.old, cp.Size, err)
	}
	return nil
}

// logVerifier returns the log's verifier for origin, when the witness
// knows it.
func (w *Witness) logVerifier(origin string) (note.Verifier, bool) {
	name, ok := strings.CutPrefix(origin, w.cfg.OriginPrefix+"/")
	if !ok || name == "" {
		return nil, false
	}
	vkey, err := note.NewEd25519VerifierKey(origin, w.cfg.LogKey)
	if err != nil {
		return nil, false // not a valid key name (a space or a '+')
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, false
	}
	return v, true
}

// noteText returns a signed note's text, without checking a signature.
func noteText(msg []byte) (string, error) {
	_, err := note.Open(msg, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		return unverified.Note.Text, nil
	}
	if err == nil {
		return "", errors.New("a note verified by no key")
	}
	return "", err
}

func (w *Witness) origin(name string) *origin {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.origins[name]
	if o == nil {
		o = &origin{}
		w.origins[name] = o
	}
	return o
}

// load reads the origin's state from its file once; o.mu is held.
func (w *Witness) load(name string, o *origin) error {
	if o.loaded {
		return nil
	}
	raw, err := os.ReadFile(w.path(name))
	if errors.Is(err, os.ErrNotExist) {
		o.loaded = true
		return nil
	}
	if err != nil {
		return err
	}
	text, err := noteText(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", w.path(name), err)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(text)); err != nil {
		return fmt.Errorf("%s: %w", w.path(name), err)
	}
	if cp.Origin != name {
		return fmt.Errorf("%s holds origin %q", w.path(name), cp.Origin)
	}
	o.size, o.root, o.loaded = cp.Size, cp.Hash, true
	return nil
}

// OriginHash is the hex SHA-256 of an origin: its state file's name and
// its monitoring path.
func OriginHash(origin string) string {
	sum := sha256.Sum256([]byte(origin))
	return hex.EncodeToString(sum[:])
}

func (w *Witness) path(origin string) string {
	return filepath.Join(w.cfg.StateDir, OriginHash(origin)+".checkpoint")
}

// latest serves the latest cosigned checkpoint of an origin by its hash.
func (w *Witness) latest(rw http.ResponseWriter, r *http.Request) {
	h := r.PathValue("hash")
	if _, err := hex.DecodeString(h); err != nil || len(h) != 2*sha256.Size || strings.ToLower(h) != h {
		http.NotFound(rw, r)
		return
	}
	raw, err := os.ReadFile(filepath.Join(w.cfg.StateDir, h+".checkpoint"))
	if err != nil {
		http.NotFound(rw, r)
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = rw.Write(raw)
}

// writeAtomic replaces path with data: a temporary file in the same
// directory, synced, renamed over path, and the directory synced, so that
// a crash leaves the old content or the new, never a mix.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
