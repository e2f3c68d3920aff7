package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/dev/campaignseed"
	"github.com/rcm-platform/rcm/dev/kafkatest"
	"github.com/rcm-platform/rcm/dev/mongotest"
	"github.com/rcm-platform/rcm/dev/servicetest"
	"github.com/rcm-platform/rcm/pkg/kafkax"
	"github.com/rcm-platform/rcm/pkg/principal"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestStoreCommandsPerStart counts, on the wire, the store commands the
// real service sends for each start on a document it has held for a
// while: at most two on the request path (one read of the document's
// record, one write carrying the campaign, its event and the principal's
// nonce) and at most three in all once the relay has published the events
// and removed them from the outbox.
func TestStoreCommandsPerStart(t *testing.T) {
	t.Parallel()
	// The relay removes a published event at once: no later write of
	// the record takes it out here.
	counter, db, documents, group, inst := startCounted(t, map[string]string{"RCM_OUTBOX_REMOVE_AFTER": "1ms"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A document the read model has held for a while, as most are when a
	// campaign starts on them.
	held := campaignseed.Record(campaignseed.Document{ID: "doc_count", AccountID: "org_c", LoanStatus: "BEHIND", Version: 1,
		UpdatedAt: time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)})
	if _, err := mongotest.Client(t).Database(db).Collection(campaignseed.DocumentsCollection).InsertOne(ctx, held); err != nil {
		t.Fatal(err)
	}
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	start := func(doc string) {
		t.Helper()
		body := `{"sms":true,"email":true,"call":false,"tone":"friendly","cadence":"weekly"}`
		startSigned(t, signer, inst.URL, doc, principal.Principal{AccountID: "org_c", UserID: "user_c", SessionID: "sess_c"}, body)
	}
	start("doc_count") // the first start of a document is not the steady state
	outboxEmpty := func() bool {
		var rec struct {
			Outbox []bson.Raw `bson:"outbox"`
		}
		err := mongotest.Client(t).Database(db).Collection("documents").FindOne(ctx, bson.D{{Key: "_id", Value: "doc_count"}}).Decode(&rec)
		return err == nil && len(rec.Outbox) == 0
	}
	servicetest.Eventually(t, 20*time.Second, "the first start's event out of the outbox", outboxEmpty)

	const starts = 20
	before := counter.snapshot()
	var onPath map[string]int
	for range starts {
		// The relay's removal of the previous event is not on this
		// request's path: wait for it first.
		servicetest.Eventually(t, 20*time.Second, "the outbox emptied", outboxEmpty)
		mark := counter.snapshot()
		start("doc_count")
		onPath = add(onPath, diff(counter.snapshot(), mark))
		// The relay may remove this start's event before its answer
		// arrives: that removal is not the request's.
		delete(onPath, "update documents $pullAll")
	}
	servicetest.Eventually(t, 20*time.Second, "the outbox emptied", outboxEmpty)
	all := diff(counter.snapshot(), before)

	// The test's own reads of the outbox go through another client.
	perStart := func(m map[string]int) float64 { return float64(total(m)) / starts }
	if got := perStart(onPath); got > 2 {
		t.Errorf("store commands per start on the request path: got %.2f (%v), want at most 2", got, onPath)
	}
	if got := perStart(all); got > 3 {
		t.Errorf("store commands per start in all: got %.2f (%v), want at most 3", got, all)
	}

	// A start in the minute after the read model first applied the
	// document also claims its nonce in the nonce store: its record may
	// not have existed when the nonce was first used.
	doc := []byte(`{"id":"doc_new","accountId":"org_c","loan":{"status":"BEHIND"},"version":1}`)
	if err := kafkax.ProduceAwaitGroup(ctx, kafkatest.Client(t), group, &kgo.Record{Topic: documents, Key: []byte("doc_new"), Value: doc}); err != nil {
		t.Fatal(err)
	}
	mark := counter.snapshot()
	start("doc_new")
	young := diff(counter.snapshot(), mark)
	delete(young, "update documents $pullAll")
	delete(young, "delete principal_nonces") // the nonce store's sweep, at most once a minute
	if want := map[string]int{"find documents": 1, "insert principal_nonces": 1, "update documents": 1}; !maps.Equal(young, want) {
		t.Errorf("store commands of a start on a document just applied: got %v, want %v", young, want)
	}
}

// TestStoreCommandsPerStartOnABusyRecord counts the store commands of
// starts that follow one another on one document, each once the relay
// published the one before: each start's write also takes the published
// event of the one before out of the outbox, so that a busy record costs
// one read and one write per command and no removal of its own; the last
// event waits in the outbox for the next write (or the relay's removal,
// a while later).
func TestStoreCommandsPerStartOnABusyRecord(t *testing.T) {
	t.Parallel()
	counter, db, _, _, inst := startCounted(t, map[string]string{"RCM_OUTBOX_REMOVE_AFTER": "1m", "RCM_OUTBOX_SWEEP_MIN_AGE": "5m"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	records := mongotest.Client(t).Database(db).Collection(campaignseed.DocumentsCollection)
	held := campaignseed.Record(campaignseed.Document{ID: "doc_busy", AccountID: "org_c", LoanStatus: "BEHIND", Version: 1,
		UpdatedAt: time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)})
	if _, err := records.InsertOne(ctx, held); err != nil {
		t.Fatal(err)
	}
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	published := 0
	start := func() {
		t.Helper()
		body := `{"sms":true,"email":true,"call":false,"tone":"friendly","cadence":"weekly"}`
		startSigned(t, signer, inst.URL, "doc_busy", principal.Principal{AccountID: "org_c", UserID: "user_c", SessionID: "sess_c"}, body)
		// The next start comes once the relay has this one's event
		// acknowledged.
		published++
		servicetest.Eventually(t, 20*time.Second, "the start's event published", func() bool {
			return metricValue(t, inst.URL, `rcm_outbox_publish_total{outcome="ok"}`) >= float64(published)
		})
	}
	start() // the first start of a document is not the steady state

	const starts = 20
	before := counter.snapshot()
	for range starts {
		start()
	}
	all := diff(counter.snapshot(), before)
	if want := map[string]int{"find documents": starts, "update documents": starts}; !maps.Equal(all, want) {
		t.Errorf("store commands of %d starts on a busy record, the relay's included: got %v, want %v", starts, all, want)
	}
	var rec struct {
		Outbox []struct {
			Type string `bson:"type"`
		} `bson:"outbox"`
	}
	if err := records.FindOne(ctx, bson.D{{Key: "_id", Value: "doc_busy"}}).Decode(&rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.Outbox) != 1 {
		t.Errorf("the outbox holds %d events after %d starts, each published: want the last one only, until the next write or the relay's removal", len(rec.Outbox), starts)
	}
}

// metricValue reads one sample of the service's /metrics (name with its
// labels as exposed); 0 when absent.
func metricValue(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return 0
}

// TestStoreCommandsPerAttempt counts the same for contact attempts on a
// document the service has held for a while: one read of the record and
// one write on the request path, at most three commands in all, and the
// write carries the new attempt (and the nonce) only, not the attempts
// recorded before it: its size does not grow with them.
func TestStoreCommandsPerAttempt(t *testing.T) {
	t.Parallel()
	// The relay removes a published event at once: no later write of
	// the record takes it out here.
	counter, db, _, _, inst := startCounted(t, map[string]string{"RCM_OUTBOX_REMOVE_AFTER": "1ms"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := mongotest.Client(t).Database(db).Collection(campaignseed.DocumentsCollection)
	held := campaignseed.Record(campaignseed.Document{ID: "doc_att", AccountID: "org_c", LoanStatus: "BEHIND", Version: 1,
		TimeZone: "America/Chicago", UpdatedAt: time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)})
	if _, err := client.InsertOne(ctx, held); err != nil {
		t.Fatal(err)
	}
	signer, err := principal.NewSigner(principal.DevSecret, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	const path, body = "/v1/documents/doc_att/contact-attempts", `{"channel":"sms","direction":"inbound","notes":"called back"}`
	attempt := func() {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, inst.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if err := signer.Sign(req, principal.Principal{AccountID: "org_c", UserID: "user_c"}); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("attempt: got %d %s, want 201", resp.StatusCode, answer)
		}
	}
	outboxEmpty := func() bool {
		var rec struct {
			Outbox []bson.Raw `bson:"outbox"`
		}
		err := client.FindOne(ctx, bson.D{{Key: "_id", Value: "doc_att"}}).Decode(&rec)
		return err == nil && len(rec.Outbox) == 0
	}
	attempt() // the first command of a record is not the steady state
	servicetest.Eventually(t, 20*time.Second, "the first attempt's event out of the outbox", outboxEmpty)

	const attempts = 20
	before := counter.snapshot()
	var onPath map[string]int
	var writes []int
	for range attempts {
		servicetest.Eventually(t, 20*time.Second, "the outbox emptied", outboxEmpty)
		mark, sized := counter.snapshot(), len(counter.sizesOf("update documents"))
		attempt()
		onPath = add(onPath, diff(counter.snapshot(), mark))
		delete(onPath, "update documents $pullAll")
		if w := counter.sizesOf("update documents")[sized:]; len(w) == 1 {
			writes = append(writes, w[0])
		}
	}
	servicetest.Eventually(t, 20*time.Second, "the outbox emptied", outboxEmpty)
	all := diff(counter.snapshot(), before)

	perAttempt := func(m map[string]int) float64 { return float64(total(m)) / attempts }
	if got := perAttempt(onPath); got > 2 {
		t.Errorf("store commands per attempt on the request path: got %.2f (%v), want at most 2", got, onPath)
	}
	if got := perAttempt(all); got > 3 {
		t.Errorf("store commands per attempt in all: got %.2f (%v), want at most 3", got, all)
	}
	if len(writes) != attempts {
		t.Fatalf("saw %d single writes of the record for %d attempts", len(writes), attempts)
	}
	// Each write holds one attempt, one event and one nonce, of the same
	// sizes each time; ids and times are of fixed width.
	if first, last := writes[0], writes[attempts-1]; last > first+16 {
		t.Errorf("the record's write grew from %d to %d bytes over %d attempts: it carries more than the new attempt", first, last, attempts)
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func add(a, b map[string]int) map[string]int {
	if a == nil {
		a = map[string]int{}
	}
	for k, v := range b {
		a[k] += v
	}
	return a
}

func diff(after, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// commandCounter is a TCP proxy on loopback in front of the store that
// counts the commands passing through it by name and collection, leaving
// out the driver's own (handshakes, heartbeats, sessions).
type commandCounter struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	counts map[string]int
	sizes  map[string][]int // each command's size on the wire, in order
	open   []net.Conn
}

// startSigned starts a campaign on doc with body, as p through the
// gateway, signed as the gateway signs it, and returns the 201's body.
func startSigned(t *testing.T, signer *principal.Signer, baseURL, doc string, p principal.Principal, body string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, baseURL+"/v1/documents/"+doc+"/rcm", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := signer.Sign(req, p); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("start: got %d %s, want 201", resp.StatusCode, answer)
	}
	return answer
}

// startCounted starts the service on a store whose commands the counter
// returned counts, in a database of its own (db), with topics of its own
// (its documents topic, and group, its consumer group there) and extra
// settings beside them.
func startCounted(t *testing.T, extra map[string]string) (counter *commandCounter, db, documents, group string, inst *servicetest.Instance) {
	t.Helper()
	counter = newCommandCounter(t, mongotest.URI(t))
	db = mongotest.NewDatabase(t)
	documents = kafkatest.NewTopic(t, 2)
	group = "rcm-campaign-" + strings.ReplaceAll(documents, ".", "-")
	env := map[string]string{
		"RCM_MONGODB_URI":         counter.URI(),
		"RCM_MONGODB_DATABASE":    db,
		"RCM_EVENTS_TOPIC":        kafkatest.NewTopic(t, 2),
		"RCM_DOCUMENTS_TOPIC":     documents,
		"RCM_DOCUMENTS_DLQ_TOPIC": kafkatest.NewTopic(t, 1),
		"RCM_DOCUMENTS_GROUP":     group,
		"RCM_KAFKA_PARTITIONS":    "2",
	}
	maps.Copy(env, extra)
	return counter, db, documents, group, servicetest.Start(t, "campaign", run, servicetest.Env(t, env))
}

func newCommandCounter(t *testing.T, uri string) *commandCounter {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &commandCounter{ln: ln, target: u.Host, counts: map[string]int{}, sizes: map[string][]int{}}
	go c.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, conn := range c.open {
			_ = conn.Close()
		}
	})
	return c
}

func (c *commandCounter) URI() string {
	return "mongodb://" + c.ln.Addr().String() + "/?directConnection=true"
}

// sizesOf returns the wire sizes of the commands of key so far, in order.
func (c *commandCounter) sizesOf(key string) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sizes[key])
}

func (c *commandCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// driverCommands are what the driver sends of its own.
var driverCommands = map[string]bool{"hello": true, "ismaster": true, "isMaster": true, "ping": true, "endSessions": true, "buildInfo": true}

func (c *commandCounter) serve() {
	for {
		client, err := c.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", c.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		c.mu.Lock()
		c.open = append(c.open, client, server)
		c.mu.Unlock()
		go func() {
			defer client.Close()
			defer server.Close()
			for {
				msg, err := readWireMessage(client)
				if err != nil {
					return
				}
				if cmd, coll, ok := wireCommand(msg); ok && !driverCommands[cmd] {
					key := fmt.Sprintf("%s %s", cmd, coll)
					if bytes.Contains(msg, []byte("$pullAll")) {
						key += " $pullAll" // the relay's outbox removal
					}
					c.mu.Lock()
					c.counts[key]++
					c.sizes[key] = append(c.sizes[key], len(msg))
					c.mu.Unlock()
				}
				if _, err := server.Write(msg); err != nil {
					return
				}
			}
		}()
		go func() {
			defer client.Close()
			defer server.Close()
			_, _ = io.Copy(client, server)
		}()
	}
}

func readWireMessage(r io.Reader) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(head[:]))
	if n < 16 || n > 64<<20 {
		return nil, io.ErrUnexpectedEOF
	}
	msg := make([]byte, n)
	copy(msg, head[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}

// wireCommand returns the command name and its first value (the
// collection, for a string) of an OP_MSG.
func wireCommand(msg []byte) (string, string, bool) {
	const opMsg = 2013
	if len(msg) < 27 || binary.LittleEndian.Uint32(msg[12:16]) != opMsg || msg[20] != 0 {
		return "", "", false
	}
	body := msg[21:]
	key := body[5:]
	end := bytes.IndexByte(key, 0)
	if end < 0 {
		return "", "", false
	}
	name := string(key[:end])
	if body[4] != 0x02 || len(key) < end+5 { // not a string value
		return name, "", true
	}
	n := int(binary.LittleEndian.Uint32(key[end+1 : end+5]))
	if n < 1 || len(key) < end+5+n {
		return name, "", true
	}
	return name, string(key[end+5 : end+5+n-1]), true
}
