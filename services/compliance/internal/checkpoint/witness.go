package checkpoint

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	tnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Witness is one witness of RCM_LOG_WITNESSES: where it takes
// checkpoints (C2SP tlog-witness) and the key its cosignatures verify
// with (C2SP tlog-cosignature, cosignature/v1).
type Witness struct {
	// URL is the witness's submission prefix; checkpoints go to
	// URL/add-checkpoint.
	URL      string
	verifier note.Verifier
}

// maxWitnesses bounds the witnesses of RCM_LOG_WITNESSES (publishMark
// counts their cosignatures in a byte).
const maxWitnesses = 255

// ParseWitnesses reads RCM_LOG_WITNESSES: a comma-separated list of
// <url>|<witness verifier key>.
func ParseWitnesses(list []string) ([]*Witness, error) {
	if len(list) > maxWitnesses {
		return nil, fmt.Errorf("RCM_LOG_WITNESSES: %d witnesses, at most %d", len(list), maxWitnesses)
	}
	var out []*Witness
	seen := map[string]bool{}
	for _, item := range list {
		u, vkey, ok := strings.Cut(strings.TrimSpace(item), "|")
		if !ok || u == "" || vkey == "" {
			return nil, fmt.Errorf("RCM_LOG_WITNESSES: %q is not <url>|<verifier key>", item)
		}
		v, err := tnote.NewVerifierForCosignatureV1(strings.TrimSpace(vkey))
		if err != nil {
			return nil, fmt.Errorf("RCM_LOG_WITNESSES: verifier key of %s: %w", u, err)
		}
		w := &Witness{URL: strings.TrimSuffix(strings.TrimSpace(u), "/"), verifier: v}
		if seen[w.ID()] {
			return nil, fmt.Errorf("RCM_LOG_WITNESSES: witness key %s given twice", w.ID())
		}
		seen[w.ID()] = true
		out = append(out, w)
	}
	return out, nil
}

// ID names the witness's key: its name and key id.
func (w *Witness) ID() string {
	return fmt.Sprintf("%s+%08x", w.verifier.Name(), w.verifier.KeyHash())
}

// Refusal is a witness's answer other than a cosignature.
type Refusal struct {
	Witness string
	// Status is the HTTP status (0 when the witness gave no answer, or
	// an answer that does not hold its valid cosignature).
	Status int
	// Size is the witness's latest size for the origin, from a 409.
	Size   int64
	Reason string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("witness %s refused (status %d): %s", r.Witness, r.Status, r.Reason)
}

// Label is the refusal's reason as a metric label.
func (r *Refusal) Label() string {
	if r.Status != 0 {
		return strconv.Itoa(r.Status)
	}
	return r.Reason
}

// reasonBadCosignature is the reason of an answer without the witness's
// valid cosignature.
const reasonBadCosignature = "bad_cosignature"

// maxAnswer bounds what is read of a witness's answer.
const maxAnswer = 64 << 10

// AddCheckpoint sends the signed note msg to the witness, with old, the
// size the witness is believed to hold, and proof, the consistency proof
// from old to the note's size. It returns the witness's cosignature line,
// verified with its key against msg, or a *Refusal.
func (w *Witness) AddCheckpoint(ctx context.Context, client *http.Client, old int64, proof tlog.TreeProof, msg []byte) (string, error) {
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", old)
	for _, h := range proof {
		body.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	body.WriteString("\n")
	body.Write(msg)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL+"/add-checkpoint", &body)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", &Refusal{Witness: w.ID(), Reason: "unreachable: " + err.Error()}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return "", &Refusal{Witness: w.ID(), Reason: "unreachable: " + err.Error()}
	}
	if resp.StatusCode == http.StatusConflict {
		size, err := strconv.ParseInt(strings.TrimSpace(string(answer)), 10, 64)
		if err != nil || size < 0 {
			return "", &Refusal{Witness: w.ID(), Status: resp.StatusCode, Size: -1, Reason: "409 without a size"}
		}
		return "", &Refusal{Witness: w.ID(), Status: resp.StatusCode, Size: size, Reason: fmt.Sprintf("its latest size is %d, not %d", size, old)}
	}
	if resp.StatusCode != http.StatusOK {
		return "", &Refusal{Witness: w.ID(), Status: resp.StatusCode, Reason: strings.TrimSpace(string(answer))}
	}
	for _, line := range signatureLines(string(answer)) {
		if w.verifies(msg, line) {
			return line, nil
		}
	}
	return "", &Refusal{Witness: w.ID(), Reason: reasonBadCosignature}
}

// verifies reports whether line is the witness's valid cosignature of
// the signed note msg.
func (w *Witness) verifies(msg []byte, line string) bool {
	n, err := note.Open(append(append([]byte(nil), msg...), line...), note.VerifierList(w.verifier))
	if err != nil {
		return false
	}
	for _, s := range n.Sigs {
		if s.Name == w.verifier.Name() && s.Hash == w.verifier.KeyHash() {
			return true
		}
	}
	return false
}

// IsRefusal reports whether err is a witness's refusal.
func IsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}
