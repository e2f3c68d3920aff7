package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// TestSignedStartReplayRefused: a start claims its principal's nonce in
// the write of the document's record, and a replay of the signed request
// is refused on the other replica too, also after a first answer that
// wrote nothing and a change of the document that would now let the
// start through.
func TestSignedStartReplayRefused(t *testing.T) {
	t.Parallel()
	db := mongotest.NewDatabase(t)
	documents := kafkatest.NewTopic(t, 2)
	group := "rcm-campaign-" + strings.ReplaceAll(documents, ".", "-")
	env := servicetest.Env(t, map[string]string{
		"RCM_MONGODB_DATABASE":    db,
		"RCM_EVENTS_TOPIC":        kafkatest.NewTopic(t, 2),
		"RCM_DOCUMENTS_TOPIC":     documents,
		"RCM_DOCUMENTS_DLQ_TOPIC": kafkatest.NewTopic(t, 1),
		"RCM_DOCUMENTS_GROUP":     group,
		"RCM_KAFKA_PARTITIONS":    "2",
	})
	a, b := servicetest.Start(t, "campaign", run, env), servicetest.Start(t, "campaign", run, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := kafkatest.Client(t)
	put := func(id, status string, version int) {
		t.Helper()
		v := `{"id":"` + id + `","accountId":"org_r","loan":{"status":"` + status + `"},"version":` + string(rune('0'+version)) + `}`
		if err := kafkax.ProduceAwaitGroup(ctx, cl, group, &kgo.Record{Topic: documents, Key: []byte(id), Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	const body = `{"sms":true,"email":false,"call":false,"tone":"kind","cadence":"weekly"}`
	start := func(doc string) string { return "/v1/documents/" + doc + "/rcm" }
	// signed returns the headers of a start on doc signed as the gateway
	// signs it.
	signed := func(doc string) http.Header { return sign(t, signer, start(doc), body) }
	post := func(inst *servicetest.Instance, doc string, h http.Header) int {
		return send(t, inst, start(doc), body, h)
	}

	records := mongotest.Client(t).Database(db).Collection("documents")
	put("doc_r1", "BEHIND", 1)
	put("doc_r2", "CURRENT", 1)
	tests := []struct {
		name   string
		doc    string
		first  int
		before func() // what changes between the first answer and the replay
	}{
		{name: "a started campaign", doc: "doc_r1", first: http.StatusCreated},
		{name: "a start the loan rule refused, the loan BEHIND since", doc: "doc_r2", first: http.StatusBadRequest,
			before: func() { put("doc_r2", "BEHIND", 2) }},
		{name: "a start on a document not known yet, known since", doc: "doc_r3", first: http.StatusNotFound,
			before: func() { put("doc_r3", "BEHIND", 1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := signed(tt.doc)
			if got := post(a, tt.doc, h); got != tt.first {
				t.Fatalf("first: got %d, want %d", got, tt.first)
			}
			if tt.first == http.StatusNotFound {
				// The nonce of a command on a document nobody knows is
				// claimed without making it a record.
				noRecord(t, records, tt.doc)
			}
			if tt.before != nil {
				tt.before()
			}
			for _, inst := range []*servicetest.Instance{b, a} {
				if got := post(inst, tt.doc, h); got != http.StatusForbidden {
					t.Fatalf("replay: got %d, want 403", got)
				}
			}
			// The same command newly signed is no replay.
			if got := post(b, tt.doc, signed(tt.doc)); got != http.StatusCreated {
				t.Fatalf("the command signed again: got %d, want 201", got)
			}
		})
	}
}

// TestSignedAttemptReplayRefused: the same for a contact attempt, which
// claims its nonce in the write that records it.
func TestSignedAttemptReplayRefused(t *testing.T) {
	t.Parallel()
	db := mongotest.NewDatabase(t)
	documents := kafkatest.NewTopic(t, 2)
	group := "rcm-campaign-" + strings.ReplaceAll(documents, ".", "-")
	env := servicetest.Env(t, map[string]string{
		"RCM_MONGODB_DATABASE":    db,
		"RCM_EVENTS_TOPIC":        kafkatest.NewTopic(t, 2),
		"RCM_DOCUMENTS_TOPIC":     documents,
		"RCM_DOCUMENTS_DLQ_TOPIC": kafkatest.NewTopic(t, 1),
		"RCM_DOCUMENTS_GROUP":     group,
		"RCM_KAFKA_PARTITIONS":    "2",
	})
	a, b := servicetest.Start(t, "campaign", run, env), servicetest.Start(t, "campaign", run, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	doc := `{"id":"doc_a1","accountId":"org_r","loan":{"status":"BEHIND"},"version":1}`
	if err := kafkax.ProduceAwaitGroup(ctx, kafkatest.Client(t), group, &kgo.Record{Topic: documents, Key: []byte("doc_a1"), Value: []byte(doc)}); err != nil {
		t.Fatal(err)
	}
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	const path, body = "/v1/documents/doc_a1/contact-attempts", `{"channel":"sms","direction":"inbound"}`
	h := sign(t, signer, path, body)
	if got := send(t, a, path, body, h); got != http.StatusCreated {
		t.Fatalf("first: got %d, want 201", got)
	}
	for _, inst := range []*servicetest.Instance{b, a} {
		if got := send(t, inst, path, body, h); got != http.StatusForbidden {
			t.Fatalf("replay: got %d, want 403", got)
		}
	}
	if got := send(t, b, path, body, sign(t, signer, path, body)); got != http.StatusCreated {
		t.Fatalf("the attempt signed again: got %d, want 201", got)
	}

	// An attempt on a document not known yet: 404, and no record made
	// for it; its replay once the document is known is refused.
	const unknown = "/v1/documents/doc_a2/contact-attempts"
	h = sign(t, signer, unknown, body)
	if got := send(t, a, unknown, body, h); got != http.StatusNotFound {
		t.Fatalf("on an unknown document: got %d, want 404", got)
	}
	noRecord(t, mongotest.Client(t).Database(db).Collection("documents"), "doc_a2")
	doc = `{"id":"doc_a2","accountId":"org_r","loan":{"status":"BEHIND"},"version":1}`
	if err := kafkax.ProduceAwaitGroup(ctx, kafkatest.Client(t), group, &kgo.Record{Topic: documents, Key: []byte("doc_a2"), Value: []byte(doc)}); err != nil {
		t.Fatal(err)
	}
	for _, inst := range []*servicetest.Instance{b, a} {
		if got := send(t, inst, unknown, body, h); got != http.StatusForbidden {
			t.Fatalf("replay once the document is known: got %d, want 403", got)
		}
	}
	if got := send(t, b, unknown, body, sign(t, signer, unknown, body)); got != http.StatusCreated {
		t.Fatalf("the attempt signed again: got %d, want 201", got)
	}
}

// noRecord fails t if the documents collection holds a record of doc.
func noRecord(t *testing.T, records *mongo.Collection, doc string) {
	t.Helper()
	n, err := records.CountDocuments(context.Background(), bson.D{{Key: "_id", Value: doc}})
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a record of %s was made for a command answered 404", doc)
	}
}

// sign returns the headers of a POST of body to path signed as the
// gateway signs it.
func sign(t *testing.T, signer *principal.Signer, path, body string) http.Header {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := signer.Sign(req, principal.Principal{AccountID: "org_r", UserID: "user_r"}); err != nil {
		t.Fatal(err)
	}
	return req.Header
}

// send POSTs body to path on inst with headers h and returns the status.
func send(t *testing.T, inst *servicetest.Instance, path, body string, h http.Header) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, inst.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
