package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/ids"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/rcm-platform/rcm/pkg/witness"
	"github.com/rcm-platform/rcm/services/compliance/internal/checkpoint"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// testKey is a fixed development seed for the tests' log.
var testKey = base64.StdEncoding.EncodeToString([]byte("compliance test log signing key!"))

// TestRefusesToStartWithoutSigningKey: no RCM_LOG_SIGNING_KEY, no
// service, and the error says what is missing.
func TestRefusesToStartWithoutSigningKey(t *testing.T) {
	t.Parallel()
	vars := servicetest.Env(t, nil)
	err := run(context.Background(), func(k string) string { return vars[k] }, &strings.Builder{})
	if !errors.Is(err, checkpoint.ErrNoKey) {
		t.Fatalf("run without a signing key: got %v, want %v", err, checkpoint.ErrNoKey)
	}
}

// TestTransparencyRoutes runs the service as main does with a witness:
// the checkpoint route answers a note that verifies with x/mod's note
// package given the verifier key route's key, with the witness's
// cosignature; the topic carries it; a proof verifies with tlog and with
// transparency-dev/merkle; the consistency route's proof verifies with
// merkle; verify?checkpoint= says consistent; and the errors are the
// contract's.
func TestTransparencyRoutes(t *testing.T) {
	t.Parallel()
	topic, dlq, cps := kafkatest.NewTopic(t, 1), kafkatest.NewTopic(t, 1), kafkatest.NewTopic(t, 1)
	seed, _ := base64.StdEncoding.DecodeString(testKey)
	wk, err := witness.LoadOrCreateKey(t.TempDir(), "witness.test/main")
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.New(witness.Config{StateDir: t.TempDir(), Signer: wk.Signer, OriginPrefix: "rcm.test/compliance",
		LogKey: ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	wsrv := httptest.NewServer(w.Handler())
	t.Cleanup(wsrv.Close)
	inst := servicetest.Start(t, "compliance", run, servicetest.Env(t, map[string]string{
		"RCM_EVENTS_TOPIC":      topic,
		"RCM_DLQ_TOPIC":         dlq,
		"RCM_CHECKPOINTS_TOPIC": cps,
		"RCM_COMPLIANCE_GROUP":  "rcm-compliance-" + strings.ReplaceAll(topic, ".", "-"),
		"RCM_KAFKA_PARTITIONS":  "1",
		"RCM_LOG_SIGNING_KEY":   testKey,
		"RCM_LOG_ORIGIN":        "rcm.test/compliance",
		"RCM_LOG_WITNESSES":     wsrv.URL + "|" + wk.VerifierKey,
	}))
	signer, _ := principal.NewSigner(principal.DevSecret, time.Now)
	const account = "org_routes"
	get := func(path string) (int, string) {
		t.Helper()
		status, body := servicetest.Get(t, signer, inst.URL+path, account)
		return status, string(body)
	}
	if status, body := get("/v1/compliance-log/checkpoint"); status != http.StatusNotFound || !strings.Contains(body, `"Not found."`) {
		t.Fatalf("checkpoint of an empty log: got %d %s, want 404 Not found.", status, body)
	}
	gen := ids.NewGenerator(time.Now)
	producer := kafkatest.Client(t)
	ctx := context.Background()
	produce := func(from, n int) {
		var evs []*kgo.Record
		for i := from; i < from+n; i++ {
			evs = append(evs, servicetest.Records(t, topic, servicetest.Event(gen, account, i))...)
		}
		if err := producer.ProduceSync(ctx, evs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cosigned := func(size int) string {
		var text string
		servicetest.Eventually(t, 10*time.Second, "a cosigned checkpoint of size "+strconv.Itoa(size), func() bool {
			status, body := get("/v1/compliance-log/checkpoint")
			text = body
			return status == http.StatusOK && strings.Contains(body, "\n"+strconv.Itoa(size)+"\n") && strings.Count(body, "\u2014 ") == 2
		})
		return text
	}
	produce(0, 3)
	cp3 := cosigned(3)
	produce(3, 4)
	cp7 := cosigned(7)

	status, vkey := get("/v1/compliance-log/verifier-key")
	if status != http.StatusOK {
		t.Fatalf("verifier key: %d %s", status, vkey)
	}
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil || v.Name() != "rcm.test/compliance/"+account {
		t.Fatalf("verifier key %q: %v (name %q)", vkey, err, v.Name())
	}
	n, err := note.Open([]byte(cp7), note.VerifierList(v))
	if err != nil {
		t.Fatalf("the checkpoint does not verify with the published key: %v\n%s", err, cp7)
	}
	lines := strings.Split(n.Text, "\n")
	root7, err := tlog.ParseHash(lines[2])
	if err != nil || lines[0] != "rcm.test/compliance/"+account || lines[1] != "7" {
		t.Fatalf("checkpoint body %q", n.Text)
	}

	// The topic carries the checkpoints, as text.
	consumer := kafkatest.Client(t, kgo.ConsumeTopics(cps), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var seen []string
	servicetest.Eventually(t, 10*time.Second, "the checkpoint of 7 on the topic", func() bool {
		fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		consumer.PollFetches(fctx).EachRecord(func(r *kgo.Record) {
			if string(r.Key) == account && len(r.Headers) == 1 && r.Headers[0].Key == "content-type" && string(r.Headers[0].Value) == "text/plain" {
				seen = append(seen, string(r.Value))
			}
		})
		return len(seen) > 0 && seen[len(seen)-1] == cp7
	})

	// An inclusion proof, checked by two implementations.
	status, receipt := get("/v1/compliance-log/entries/5/proof?size=7")
	if status != http.StatusOK {
		t.Fatalf("proof: %d %s", status, receipt)
	}
	head, rest, _ := strings.Cut(receipt, "\n\n")
	if rest != cp7 {
		t.Fatalf("the proof's checkpoint %q, want the checkpoint of 7 %q", rest, cp7)
	}
	pl := strings.Split(head, "\n")
	if pl[0] != "c2sp.org/tlog-proof@v1" || !strings.HasPrefix(pl[1], "extra ") || pl[2] != "index 4" {
		t.Fatalf("proof header %q", pl[:3])
	}
	leaf, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(pl[1], "extra "))
	if err != nil {
		t.Fatal(err)
	}
	var entry auditlog.Entry
	if err := json.Unmarshal(leaf, &entry); err != nil || entry.Seq != 5 || entry.AccountID != account {
		t.Fatalf("extra is not entry 5: %s %v", leaf, err)
	}
	var rp tlog.RecordProof
	var raw [][]byte
	for _, l := range pl[3:] {
		h, err := tlog.ParseHash(l)
		if err != nil {
			t.Fatalf("proof line %q: %v", l, err)
		}
		rp = append(rp, h)
		raw = append(raw, h[:])
	}
	if err := tlog.CheckRecord(rp, 7, root7, 4, tlog.RecordHash(leaf)); err != nil {
		t.Errorf("tlog.CheckRecord: %v", err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, 4, 7, rfc6962.DefaultHasher.HashLeaf(leaf), raw, root7[:]); err != nil {
		t.Errorf("merkle VerifyInclusion: %v", err)
	}

	// A consistency proof between the two checkpoints, checked by merkle.
	n3, err := note.Open([]byte(cp3), note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	root3, _ := tlog.ParseHash(strings.Split(n3.Text, "\n")[2])
	status, body := get("/v1/compliance-log/consistency?from=3&to=7")
	var cons struct {
		From, To int64
		Proof    []string
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &cons) != nil || cons.From != 3 || cons.To != 7 {
		t.Fatalf("consistency: %d %s", status, body)
	}
	var craw [][]byte
	for _, p := range cons.Proof {
		b, _ := base64.StdEncoding.DecodeString(p)
		craw = append(craw, b)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, 3, 7, craw, root3[:], root7[:]); err != nil {
		t.Errorf("merkle VerifyConsistency: %v", err)
	}

	// verify with the earlier checkpoint, padded or not, cosigned or not.
	for _, c := range []string{
		base64.URLEncoding.EncodeToString([]byte(cp3)),
		base64.RawURLEncoding.EncodeToString([]byte(cp3)),
		base64.RawURLEncoding.EncodeToString([]byte(cp3[:strings.LastIndex(cp3[:len(cp3)-1], "\n")+1])),
	} {
		status, body := get("/v1/compliance-log/verify?checkpoint=" + c)
		var res struct {
			OK         bool
			TreeSize   int64
			Checkpoint *struct {
				TreeSize   int64
				Consistent bool
			}
		}
		if status != http.StatusOK || json.Unmarshal([]byte(body), &res) != nil || !res.OK || res.TreeSize != 7 ||
			res.Checkpoint == nil || res.Checkpoint.TreeSize != 3 || !res.Checkpoint.Consistent {
			t.Errorf("verify?checkpoint=<the checkpoint of 3>: got %d %s, want ok and consistent", status, body)
		}
	}

	// The contract's errors.
	otherKey := checkpoint.NewKey([]byte(strings.Repeat("k", 32)), "rcm.test/compliance")
	forged, _ := otherKey.Sign(account, 3, root3)
	for path, want := range map[string]string{
		"/v1/compliance-log/entries/8/proof":                                                        "404 Not found.",
		"/v1/compliance-log/entries/0/proof":                                                        "404 Not found.",
		"/v1/compliance-log/entries/x/proof":                                                        "404 Not found.",
		"/v1/compliance-log/entries/2/proof?size=5":                                                 "404 Not found.",
		"/v1/compliance-log/entries/2/proof?size=-1":                                                "400 Invalid query parameter.",
		"/v1/compliance-log/consistency?from=3&to=5":                                                "404 Not found.",
		"/v1/compliance-log/consistency?from=0&to=7":                                                "400 Invalid query parameter.",
		"/v1/compliance-log/consistency?from=7&to=3":                                                "400 Invalid query parameter.",
		"/v1/compliance-log/consistency?from=3":                                                     "400 Invalid query parameter.",
		"/v1/compliance-log/verify?checkpoint=%%%":                                                  "400 Invalid query parameter.",
		"/v1/compliance-log/verify?checkpoint=" + base64.RawURLEncoding.EncodeToString(forged.Note): "400 Invalid query parameter.",
	} {
		status, body := get(path)
		code, msg, _ := strings.Cut(want, " ")
		if strconv.Itoa(status) != code || !strings.Contains(body, `"error":"`+msg+`"`) {
			t.Errorf("%s: got %d %s, want %s", path, status, body, want)
		}
	}
	// Another account's checkpoint is of another origin.
	status, other := servicetest.Get(t, signer, inst.URL+"/v1/compliance-log/verify?checkpoint="+base64.RawURLEncoding.EncodeToString([]byte(cp3)), "org_other")
	if status != http.StatusBadRequest || !strings.Contains(string(other), "Invalid query parameter.") {
		t.Errorf("another account's checkpoint: got %d %s, want 400", status, other)
	}
}
