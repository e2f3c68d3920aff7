package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rcm-platform/rcm/api/contract"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/auditlog"
	"github.com/rcm-platform/rcm/pkg/events"
	"github.com/rcm-platform/rcm/pkg/sessiontoken"
)

// The chaos test runs clients against a stack of its own while it breaks
// that stack in every way the platform claims to survive, then checks
// every promise made to the clients.
//
// Its knobs, from the environment:
//   - RCM_CHAOS_SEED: the seed of every random choice (printed; default:
//     the clock), to run a failing schedule again.
//   - RCM_CHAOS_DURATION: how long faults go on, in rounds of one of each
//     fault in random order (default: one round, about half a minute).
//     make chaos sets minutes.
const (
	// chaosRequestDeadline is the longest the services give a request: the
	// campaign service's handler timeout and the gateway's upstream
	// timeout (15 s). A store reply held back for longer arrives after
	// the caller gave up.
	chaosRequestDeadline = 15 * time.Second
	// chaosStoreDelay is how long a held store reply waits.
	chaosStoreDelay = chaosRequestDeadline + 2*time.Second
	// The workload's clients have whole-request timeouts of their own: an
	// impatient one gives up long before the services do (and the
	// gateway, seeing it go, cancels the request upstream), a patient one
	// waits past the gateway's deadline. Both retry.
	chaosImpatient = 5 * time.Second
	chaosPatient   = chaosRequestDeadline + 5*time.Second
	// chaosTail bounds how long, after the last fault, a client keeps
	// retrying a request that has no answer yet. A claim left pending is
	// presumed abandoned after 30 s (idempotency.Store.Stale), so this
	// leaves room for one recovery on a loaded machine.
	chaosTail = 90 * time.Second
	// chaosSettle bounds the wait for the system to settle once the
	// clients are done: outbox empty, every consumer group at the end.
	chaosSettle = 90 * time.Second
)

const (
	chaosAccounts = 3
	chaosDocs     = 30 // per account: opt-outs revoke channels on their documents, and a start of revoked channels only is refused
	chaosWorkers  = 12
)

// A fault is one of these.
const (
	faultBroker = "broker outage"
	faultStore  = "store outage"
	faultDelay  = "store replies delayed"
)

// chaosKey is one logical request of the workload: one Idempotency-Key,
// one body, sent until it gets an answer that is not a failure.
type chaosKey struct {
	key     string
	kind    string // events.TypeCampaignStarted or events.TypeOptOut
	account *chaosAccount
	doc     string
	target  string // an opt-out's campaign
	body    []byte

	attempts int
	status   int    // the final answer; 0 when none came
	message  string // the final answer's error, if any
	campaign string // the campaign a start answered with
	replayed bool   // the final answer was a replay
	lastFail string
}

type chaosAccount struct {
	id, tok string
	docs    []string

	mu        sync.Mutex
	campaigns []chaosCampaign // started, as answered to the client
}

type chaosCampaign struct{ id, doc string }

// chaosRun is the state of one run.
type chaosRun struct {
	t     *testing.T
	stk   *stack.Stack
	proxy *chaosProxy
	api   *chaosAPI

	mu       sync.Mutex
	keys     []*chaosKey
	causes   map[string]int // why attempts were retried
	faults   map[string]int // faults injected, by kind
	faultErr []string       // faults that could not be undone
}

func chaosSeed(t *testing.T) uint64 {
	if v := os.Getenv("RCM_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("RCM_CHAOS_SEED=%q: %v", v, err)
		}
		return s
	}
	return uint64(time.Now().UnixNano())
}

func chaosDuration(t *testing.T) time.Duration {
	v := os.Getenv("RCM_CHAOS_DURATION")
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("RCM_CHAOS_DURATION=%q: %v", v, err)
	}
	return d
}

// TestChaos: clients start campaigns and record opt-outs on several
// accounts and documents, each request with an Idempotency-Key and
// retried with the same key and body on a 5xx, a 409 "in progress", a
// 429, a lost connection or a timeout, while the services are SIGKILLed
// at random (all four), the broker and the store stop and come back, and
// store replies are held past the request deadlines. Once the faults stop
// and the system settles: every request answered 2xx is in the log
// exactly once, every key made one action, every entry comes from a
// request, every chain verifies, the feed (history and a reconnecting SSE
// stream) holds each entry once, and no consumer group lags.
func TestChaos(t *testing.T) {
	seed := chaosSeed(t)
	duration := chaosDuration(t)
	t.Logf("chaos seed %d (RCM_CHAOS_SEED=%d runs this schedule again)", seed, seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	r := startChaos(t, seed)

	accounts := make([]*chaosAccount, chaosAccounts)
	var docs []stack.Document
	for i := range accounts {
		a := &chaosAccount{id: newAccount(t, "org")}
		tok, err := r.stk.Token(sessiontoken.Claims{Subject: "user_member_of_" + a.id, OrgID: a.id, SessionID: "sess_chaos"})
		if err != nil {
			t.Fatal(err)
		}
		a.tok = tok
		for d := 0; d < chaosDocs; d++ {
			doc := fmt.Sprintf("doc_chaos%d_%s", d, a.id)
			a.docs = append(a.docs, doc)
			docs = append(docs, stack.Document{ID: doc, AccountID: a.id, Loan: &stack.Loan{Status: "BEHIND"}, Version: 1})
		}
		accounts[i] = a
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := r.stk.PutDocuments(ctx, docs...); err != nil {
		t.Fatal(err)
	}
	cancel()
	streams := make([]*chaosStream, len(accounts))
	for i, a := range accounts {
		streams[i] = chaosSubscribe(t, r.api, a.tok)
	}

	// The workload: until the faults end, then each worker finishes the
	// request it has in hand.
	work, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	var giveUpMu sync.Mutex
	giveUp := time.Now().Add(24 * time.Hour)
	giveUpAt := func() time.Time {
		giveUpMu.Lock()
		defer giveUpMu.Unlock()
		return giveUp
	}
	var wg sync.WaitGroup
	for w := 0; w < chaosWorkers; w++ {
		wrnd := rand.New(rand.NewPCG(seed, uint64(100+w)))
		a := accounts[w%len(accounts)]
		timeout := chaosImpatient
		if w%2 == 1 {
			timeout = chaosPatient
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; work.Err() == nil; n++ {
				r.send(r.nextKey(wrnd, a, w, n), timeout, wrnd, giveUpAt)
				time.Sleep(time.Duration(20+wrnd.IntN(60)) * time.Millisecond)
			}
		}()
	}

	// The faults: rounds of one of each (three delay windows) in random
	// order, a calm moment before each.
	began := time.Now()
	kinds := append(append([]string{}, stack.Services...), faultBroker, faultStore, faultDelay, faultDelay, faultDelay)
	for round := 0; round == 0 || time.Since(began) < duration; round++ {
		order := slices.Clone(kinds)
		rnd.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, f := range order {
			time.Sleep(time.Duration(500+rnd.IntN(1500)) * time.Millisecond)
			r.inject(f, rnd)
		}
	}
	faultTime := time.Since(began)
	giveUpMu.Lock()
	giveUp = time.Now().Add(chaosTail)
	giveUpMu.Unlock()
	stopWork()
	wg.Wait()
	tail := time.Since(began) - faultTime

	settled, lags, pending := r.settle(accounts, streams)
	r.check(accounts, streams, seed, faultTime, tail, settled, lags, pending)
}

// startChaos starts a stack of the test's own, with the delaying proxy
// between the services and the store, so that its faults touch no other
// test.
func startChaos(t *testing.T, seed uint64) *chaosRun {
	t.Helper()
	// A free port for the store, which the stack starts behind the proxy.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mongoAddr := free.Addr().String()
	free.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := newChaosProxy(ln, mongoAddr, seed)
	t.Cleanup(proxy.Close)
	logs := &lockedBuffer{}
	s, err := stack.Start(context.Background(), stack.Config{
		DataDir: t.TempDir(), BinDir: binDir, RandomPorts: true, Logs: logs, Partitions: 3, MongoAddr: mongoAddr,
		Env: map[string]string{
			"RCM_MONGODB_URI":           "mongodb://" + proxy.Addr() + "/",
			"RCM_OUTBOX_SWEEP_INTERVAL": "500ms", "RCM_OUTBOX_SWEEP_MIN_AGE": "2s", "RCM_KAFKA_LAG_INTERVAL": "1s",
			// The workload is not about the rate limit.
			"RCM_RATE_LIMIT": "1000000",
		},
	})
	if err != nil {
		t.Fatalf("start the chaos stack: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("stop the chaos stack: %v", err)
		}
		if t.Failed() {
			path := filepath.Join(os.TempDir(), fmt.Sprintf("rcm-chaos-%d.log", seed))
			if err := os.WriteFile(path, []byte(logs.String()), 0o644); err == nil {
				t.Logf("the services' logs are in %s", path)
			}
		}
	})
	return &chaosRun{
		t: t, stk: s, proxy: proxy,
		api:    &chaosAPI{base: s.GatewayURL(), hc: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}},
		causes: map[string]int{}, faults: map[string]int{},
	}
}

// nextKey makes the next request of a worker: half the time a start (and
// always while the account has no campaign), else an opt-out of one of its
// campaigns. Notes carry the key, so that every log entry and every
// stored action says which request made it.
func (r *chaosRun) nextKey(rnd *rand.Rand, a *chaosAccount, worker, n int) *chaosKey {
	k := &chaosKey{key: fmt.Sprintf("chaos-w%d-%d", worker, n), account: a}
	notes := "chaos " + k.key
	a.mu.Lock()
	var target chaosCampaign
	if len(a.campaigns) > 0 && rnd.IntN(2) != 0 {
		target = a.campaigns[rnd.IntN(len(a.campaigns))]
	}
	a.mu.Unlock()
	var body any
	if target.id == "" {
		k.kind, k.doc = events.TypeCampaignStarted, a.docs[rnd.IntN(len(a.docs))]
		b := startBody()
		b["notes"] = notes
		body = b
	} else {
		k.kind, k.doc, k.target = events.TypeOptOut, target.doc, target.id
		body = map[string]any{"campaignId": target.id, "channel": []string{"sms", "email", "call", "all"}[rnd.IntN(4)], "notes": notes}
	}
	k.body, _ = json.Marshal(body)
	r.mu.Lock()
	r.keys = append(r.keys, k)
	r.mu.Unlock()
	return k
}

// send sends k until an answer that is not a failure, or giveUp passes:
// the same key and the same body every time, each attempt given timeout.
func (r *chaosRun) send(k *chaosKey, timeout time.Duration, rnd *rand.Rand, giveUp func() time.Time) {
	path := "/v1/documents/" + k.doc + "/rcm"
	want := http.StatusCreated
	if k.kind == events.TypeOptOut {
		path, want = path+"/opt-out", http.StatusOK
	}
	for {
		k.attempts++
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		a, err := r.api.do(ctx, http.MethodPost, path, k.account.tok, k.body, "Idempotency-Key", k.key)
		cancel()
		cause := ""
		switch {
		case err != nil:
			cause = "lost connection or timeout"
		case a.status >= 500:
			cause = strconv.Itoa(a.status)
		case a.status == http.StatusTooManyRequests:
			cause = "429"
		case a.status == http.StatusConflict && a.errorMessage() == contract.MsgKeyInProgress:
			cause = "409 in progress"
		}
		if cause == "" {
			k.status, k.replayed = a.status, a.header.Get("Idempotent-Replayed") == "true"
			k.message = a.errorMessage()
			if a.status == want && k.kind == events.TypeCampaignStarted {
				var b struct {
					Campaign struct {
						ID string `json:"id"`
					} `json:"campaign"`
				}
				_ = json.Unmarshal(a.body, &b)
				k.campaign = b.Campaign.ID
				k.account.mu.Lock()
				k.account.campaigns = append(k.account.campaigns, chaosCampaign{id: k.campaign, doc: k.doc})
				k.account.mu.Unlock()
			}
			return
		}
		k.lastFail = cause
		if err != nil {
			k.lastFail += ": " + err.Error()
		}
		r.mu.Lock()
		r.causes[cause]++
		r.mu.Unlock()
		wait := min(2*time.Second, 100*time.Millisecond<<min(k.attempts, 5))
		if s, err := strconv.Atoi(a.header.Get("Retry-After")); err == nil && s > 0 {
			wait = min(2*time.Second, time.Duration(s)*time.Second)
		}
		wait = wait/2 + time.Duration(rnd.Int64N(int64(wait)))
		if time.Now().Add(wait).After(giveUp()) {
			return
		}
		time.Sleep(wait)
	}
}

// inject runs one fault to its end: a service SIGKILLed (and back, by the
// stack's supervisor), the broker or the store stopped for a while
// and started again, or a window during which store replies are held.
func (r *chaosRun) inject(fault string, rnd *rand.Rand) {
	r.t.Logf("%s fault: %s", time.Now().Format("15:04:05.000"), fault)
	r.mu.Lock()
	r.faults[fault]++
	r.mu.Unlock()
	down := time.Duration(300+rnd.IntN(1200)) * time.Millisecond
	var err error
	switch fault {
	case faultBroker:
		r.stk.StopKafka()
		time.Sleep(2*time.Second + down)
		err = chaosRetry(func(ctx context.Context) error { return r.stk.StartKafka(ctx) })
	case faultStore:
		r.stk.StopMongo()
		time.Sleep(2*time.Second + down)
		err = chaosRetry(func(ctx context.Context) error { return r.stk.StartMongo(ctx) })
	case faultDelay:
		window := time.Duration(6000+rnd.IntN(3000)) * time.Millisecond
		// A third of the writes: most commands make several, and the
		// interesting reply is one after the first few have passed.
		r.proxy.delayReplies(window, chaosStoreDelay, 1.0/3)
		time.Sleep(window)
	default:
		// SIGKILL, as a crash would; the stack's supervisor starts the
		// service again. The next fault waits until it is back.
		if _, err = r.stk.Kill(fault, syscall.SIGKILL); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			err = r.stk.Process(fault).WaitReady(ctx)
			cancel()
		}
	}
	if err != nil {
		r.mu.Lock()
		r.faultErr = append(r.faultErr, fault+": "+err.Error())
		r.mu.Unlock()
	}
}

// chaosRetry runs start until it succeeds, five times at most.
func chaosRetry(start func(context.Context) error) error {
	var err error
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		err = start(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return err
}

// chaosGroups are the consumer groups and the topic each consumes.
var chaosGroups = map[string]string{"rcm-compliance": events.Topic, "rcm-feed": events.Topic, stack.DocumentsGroup: stack.DocumentsTopic}

// settle waits until nothing is left to do: the campaign service's outbox
// is empty and every consumer group has committed the end of its topic,
// twice in a row a second apart. It reports whether that happened within
// chaosSettle, and the last lags and outbox size seen.
func (r *chaosRun) settle(accounts []*chaosAccount, streams []*chaosStream) (bool, map[string]int64, float64) {
	deadline := time.Now().Add(chaosSettle)
	calm := 0
	var lags map[string]int64
	pending := -1.0
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		l, err := chaosLag(ctx, r.stk.KafkaAddr(), chaosGroups)
		cancel()
		p, perr := chaosMetric(r.stk.URL(stack.Campaign), "rcm_outbox_pending_events")
		if err == nil {
			lags = l
		}
		if perr == nil {
			pending = p
		}
		still := err != nil || perr != nil || p != 0
		for _, v := range l {
			still = still || v != 0
		}
		if still {
			calm = 0
		} else if calm++; calm >= 2 {
			return true, lags, pending
		}
		time.Sleep(time.Second)
	}
	return false, lags, pending
}

// chaosTally counts what the checks found.
type chaosTally struct {
	accepted, acceptedStarts, acceptedOptOuts, replayed, refused, unresolved int
	optedOutStarts, wronglyOptedOut                                          int
	entries, ended, campaignsStored, optOutsStored                           int

	dupLog, dupEventIDs, dupCampaigns, dupListed, dupOptOuts, dupFeed, dupStream int
	lostLog, lostCampaigns, lostOptOuts, lostFeed, lostStream                    int
	refusedRecorded, orphanEntries, orphanActions, orphanFeed, wrongCampaign     int
	lostInTopic, topicEvents                                                     int
	unverified                                                                   int
	examples                                                                     []string
	kinds                                                                        map[string]int
}

// example keeps the first few findings of each kind (each format) to
// print: enough to start looking, not a flood.
func (c *chaosTally) example(format string, args ...any) {
	if c.kinds == nil {
		c.kinds = map[string]int{}
	}
	if c.kinds[format]++; c.kinds[format] <= 3 {
		c.examples = append(c.examples, fmt.Sprintf(format, args...))
	}
}

// chaosNotesKey is the key a request wrote into its notes.
func chaosNotesKey(notes string) string {
	k, ok := strings.CutPrefix(notes, "chaos ")
	if !ok {
		return ""
	}
	return k
}

// entryKey is the key of the request that made a log entry, "" if none.
func entryKey(e auditlog.Entry) string {
	var d struct {
		Notes    string `json:"notes"`
		Campaign *struct {
			Notes string `json:"notes"`
		} `json:"campaign"`
	}
	_ = json.Unmarshal(e.Data, &d)
	if e.EventType == events.TypeCampaignStarted && d.Campaign != nil {
		return chaosNotesKey(d.Campaign.Notes)
	}
	if e.EventType == events.TypeOptOut {
		return chaosNotesKey(d.Notes)
	}
	return ""
}

// check compares what every account's log, documents, feed and stream
// hold with what the clients were told, records the figures and fails on
// any duplicate, loss or leftover.
func (r *chaosRun) check(accounts []*chaosAccount, streams []*chaosStream, seed uint64, faultTime, tail time.Duration,
	settled bool, lags map[string]int64, pending float64) {
	t := r.t
	var c chaosTally
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	topic, topicErr := chaosTopic(ctx, r.stk.KafkaAddr())
	cancel()
	if topicErr != nil {
		t.Errorf("read the event topic: %v", topicErr)
	}
	byAccount := map[*chaosAccount][]*chaosKey{}
	attempts, retried := 0, 0
	for _, k := range r.keys {
		byAccount[k.account] = append(byAccount[k.account], k)
		attempts += k.attempts
		if k.attempts > 1 {
			retried++
		}
	}
	for i, a := range accounts {
		keys := map[string]*chaosKey{}
		for _, k := range byAccount[a] {
			keys[k.key] = k
		}
		entries := r.api.logAll(t, a.tok)
		c.entries += len(entries)

		// The log: each accepted request once, nothing else.
		perKey := map[string]int{}
		ids := map[string]int{}
		campaignsStarted := map[string]bool{}
		for _, e := range entries {
			if ids[e.EventID]++; ids[e.EventID] == 2 {
				c.dupEventIDs++
				c.example("%s: event %s twice in the log", a.id, e.EventID)
			}
			if e.EventType == events.TypeCampaignStarted {
				campaignsStarted[e.CampaignID] = true
			}
			key := entryKey(e)
			k := keys[key]
			switch {
			case e.EventType == events.TypeCampaignEnded:
				c.ended++
			case k == nil || k.kind != e.EventType:
				c.orphanEntries++
				c.example("%s: entry %d %s %s comes from no request of the workload", a.id, e.Seq, e.EventType, e.EventID)
			default:
				perKey[key]++
				if e.EventType == events.TypeCampaignStarted && k.campaign != "" && e.CampaignID != k.campaign {
					c.wrongCampaign++
					c.example("%s: key %s answered campaign %s, the log also has %s", a.id, key, k.campaign, e.CampaignID)
				}
				if e.EventType == events.TypeOptOut && e.CampaignID != k.target {
					c.wrongCampaign++
				}
			}
		}
		// A campaign_ended only of a campaign the workload started.
		for _, e := range entries {
			if e.EventType == events.TypeCampaignEnded && !campaignsStarted[e.CampaignID] {
				c.orphanEntries++
				c.example("%s: %s ends campaign %s, which never started", a.id, e.EventID, e.CampaignID)
			}
		}
		for _, k := range byAccount[a] {
			n := perKey[k.key]
			switch {
			case k.status == 0:
				c.unresolved++
				c.example("%s: key %s (%s) has no answer after %d attempts, last %s", a.id, k.key, k.kind, k.attempts, k.lastFail)
				if n > 1 {
					c.dupLog += n - 1
				}
			case k.status >= 200 && k.status < 300:
				c.accepted++
				if len(topic[k.key]) > 1 {
					c.topicEvents += len(topic[k.key]) - 1
				}
				if k.kind == events.TypeCampaignStarted {
					c.acceptedStarts++
				} else {
					c.acceptedOptOuts++
				}
				if k.replayed {
					c.replayed++
				}
				if n == 0 {
					c.lostLog++
					where := "nor in the event topic"
					if len(topic[k.key]) > 0 {
						c.lostInTopic++
						where = "but in the event topic"
					}
					c.example("%s: key %s (%s, answered %d after %d attempts) is not in the log %s", a.id, k.key, k.kind, k.status, k.attempts, where)
				} else if n > 1 {
					c.dupLog += n - 1
					c.example("%s: key %s (%s, %d attempts) is in the log %d times", a.id, k.key, k.kind, k.attempts, n)
				}
			case k.kind == events.TypeCampaignStarted && k.status == http.StatusConflict && k.message == contract.MsgAllOptedOut:
				// Opt-outs revoke channels on the document and the
				// workload never grants them back: a start refused so
				// must find every channel it asks for revoked at the end.
				c.optedOutStarts++
				if !r.allRevoked(t, a.tok, k.doc, "sms", "email") {
					c.wronglyOptedOut++
					c.example("%s: key %s was refused as opted out, its document %s is not", a.id, k.key, k.doc)
				}
				if n > 0 {
					c.refusedRecorded += n
				}
			default:
				c.refused++
				c.example("%s: key %s (%s) was refused: %d", a.id, k.key, k.kind, k.status)
				if n > 0 {
					c.refusedRecorded += n
				}
			}
		}

		// The chain.
		if v := r.api.verify(t, a.tok); !v.OK || v.Entries != int64(len(entries)) || v.HeadSeq != int64(len(entries)) {
			c.unverified++
			broken := "none"
			if v.FirstBrokenSeq != nil {
				broken = strconv.FormatInt(*v.FirstBrokenSeq, 10)
			}
			c.example("%s: verify ok %v, entries %d, head %d, first broken seq %s; %d entries read", a.id, v.OK, v.Entries, v.HeadSeq, broken, len(entries))
		}

		// The actions: one campaign per start key, one opt-out per opt-out key.
		campaignsPerKey, optOutsPerKey := map[string]int{}, map[string]int{}
		listed := map[string]bool{}
		for _, doc := range a.docs {
			for _, cr := range r.api.campaignsAll(t, a.tok, doc) {
				if listed[cr.ID] {
					c.dupListed++
					c.example("%s: campaign %s listed twice on %s", a.id, cr.ID, doc)
					continue
				}
				listed[cr.ID] = true
				c.campaignsStored++
				if k := keys[chaosNotesKey(cr.Notes)]; k == nil || k.kind != events.TypeCampaignStarted {
					c.orphanActions++
					c.example("%s: campaign %s comes from no start of the workload", a.id, cr.ID)
				} else {
					campaignsPerKey[k.key]++
				}
				for _, o := range cr.OptOuts {
					c.optOutsStored++
					if k := keys[chaosNotesKey(o.Notes)]; k == nil || k.kind != events.TypeOptOut || k.target != cr.ID {
						c.orphanActions++
						c.example("%s: an opt-out of %s comes from no opt-out of the workload", a.id, cr.ID)
					} else {
						optOutsPerKey[k.key]++
					}
				}
			}
		}
		for _, k := range byAccount[a] {
			n := optOutsPerKey[k.key]
			if k.kind == events.TypeCampaignStarted {
				n = campaignsPerKey[k.key]
				if k.campaign != "" && !listed[k.campaign] {
					c.lostCampaigns++
					c.example("%s: key %s answered campaign %s, which the document does not list", a.id, k.key, k.campaign)
				}
			}
			accepted := k.status >= 200 && k.status < 300
			switch {
			case n > 1:
				if k.kind == events.TypeCampaignStarted {
					c.dupCampaigns += n - 1
				} else {
					c.dupOptOuts += n - 1
				}
				c.example("%s: key %s (%s, %d attempts, last failure %q) made %d actions", a.id, k.key, k.kind, k.attempts, k.lastFail, n)
			case n == 0 && accepted && k.kind == events.TypeOptOut:
				c.lostOptOuts++
				c.example("%s: opt-out key %s was answered %d but its campaign does not hold it", a.id, k.key, k.status)
			case n == 1 && !accepted && k.status != 0:
				c.refusedRecorded++
			}
		}

		// The feed's history: each entry once, nothing else.
		inLog := map[string]bool{}
		for _, e := range entries {
			inLog[e.EventID] = true
		}
		feed := map[string]int{}
		for _, it := range r.api.activityAll(t, a.tok) {
			feed[it.ID]++
		}
		for id, n := range feed {
			if !inLog[id] {
				c.orphanFeed++
				c.example("%s: feed item %s is not in the log", a.id, id)
			}
			if n > 1 {
				c.dupFeed += n - 1
				c.example("%s: feed item %s %d times", a.id, id, n)
			}
		}
		for id := range inLog {
			if feed[id] == 0 {
				c.lostFeed++
				c.example("%s: log entry %s is not in the feed", a.id, id)
			}
		}

		// The live stream, through every reconnect: each entry once. It
		// may still be catching up: wait for it, bounded.
		s := streams[i]
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := s.received()
			missing := 0
			for id := range inLog {
				if got[id] == 0 {
					missing++
				}
			}
			if missing == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		got := s.received()
		for id, n := range got {
			if !inLog[id] {
				c.orphanFeed++
				c.example("%s: streamed item %s is not in the log", a.id, id)
			}
			if n > 1 {
				c.dupStream += n - 1
				c.example("%s: streamed item %s %d times", a.id, id, n)
			}
		}
		for id := range inLog {
			if got[id] == 0 {
				c.lostStream++
				c.example("%s: log entry %s never reached the stream", a.id, id)
			}
		}
	}

	var lagTotal int64
	lagText := []string{}
	for _, g := range slices.Sorted(maps.Keys(lags)) {
		lagTotal += lags[g]
		lagText = append(lagText, fmt.Sprintf("%s %d", g, lags[g]))
	}
	if lags == nil {
		lagTotal = -1
		lagText = append(lagText, "unknown")
	}
	dups := c.dupLog + c.dupEventIDs + c.dupCampaigns + c.dupListed + c.dupOptOuts + c.dupFeed + c.dupStream
	losses := c.lostLog + c.lostCampaigns + c.lostOptOuts + c.lostFeed + c.lostStream
	r.mu.Lock()
	causes := fmt.Sprint(r.causes)
	kills := []string{}
	for _, s := range stack.Services {
		kills = append(kills, fmt.Sprintf("%s %d (restarts %d)", s, r.faults[s], r.stk.Process(s).Restarts()))
	}
	faults := r.faults
	faultErr := r.faultErr
	r.mu.Unlock()
	streamConnects := 0
	for _, s := range streams {
		s.mu.Lock()
		streamConnects += s.connects
		s.mu.Unlock()
	}

	figure(t, "seed %d, faults for %s, clients done %s later", seed, faultTime.Round(time.Second), tail.Round(time.Second))
	figure(t, "requests %d, attempts %d, retries %d (keys retried %d; causes %s)", len(r.keys), attempts, attempts-len(r.keys), retried, causes)
	figure(t, "SIGKILLs: %s; broker outages %d, store outages %d, store delay windows %d (write replies held %s: %d: %s); stream connects %d",
		strings.Join(kills, ", "), faults[faultBroker], faults[faultStore], faults[faultDelay], chaosStoreDelay, r.proxy.held.Load(), r.proxy.heldCounts(), streamConnects)
	figure(t, "answers: accepted %d (starts %d, opt-outs %d; replayed %d), starts refused as opted out %d, refused %d, unresolved %d",
		c.accepted, c.acceptedStarts, c.acceptedOptOuts, c.replayed, c.optedOutStarts, c.refused, c.unresolved)
	figure(t, "actions: campaigns %d, opt-outs %d; log entries %d (campaign_ended %d); settled %v, consumer lag %s, outbox pending %v",
		c.campaignsStored, c.optOutsStored, c.entries, c.ended, settled, strings.Join(lagText, ", "), pending)
	figure(t, "duplicates %d (log %d, event ids %d, campaigns %d, listed twice %d, opt-outs %d, feed %d, stream %d)",
		dups, c.dupLog, c.dupEventIDs, c.dupCampaigns, c.dupListed, c.dupOptOuts, c.dupFeed, c.dupStream)
	figure(t, "losses %d (log %d, of which in the event topic %d; campaigns %d, opt-outs %d, feed %d, stream %d); orphans: entries %d, actions %d, feed %d; wrong campaign %d; refused yet recorded %d; chains not verified %d; accepted keys with more than one event in the topic: %d extra",
		losses, c.lostLog, c.lostInTopic, c.lostCampaigns, c.lostOptOuts, c.lostFeed, c.lostStream, c.orphanEntries, c.orphanActions, c.orphanFeed, c.wrongCampaign, c.refusedRecorded, c.unverified, c.topicEvents)

	for _, e := range c.examples {
		t.Log(e)
	}
	for _, e := range faultErr {
		t.Errorf("fault not undone: %s", e)
	}
	if !settled {
		t.Errorf("the system did not settle within %s: consumer lag %s, outbox pending %v", chaosSettle, strings.Join(lagText, ", "), pending)
	}
	if dups != 0 {
		t.Errorf("%d duplicates, want 0", dups)
	}
	if losses != 0 {
		t.Errorf("%d losses, want 0", losses)
	}
	if c.unresolved != 0 {
		t.Errorf("%d requests never got an answer within %s of the last fault, want 0", c.unresolved, chaosTail)
	}
	// A log entry of a start key's other campaign is a duplicate, counted
	// above; an entry or action of no key at all is counted here.
	if n := c.orphanEntries + c.orphanActions + c.orphanFeed + c.refusedRecorded; n != 0 {
		t.Errorf("%d entries, actions or items that no accepted request explains, want 0", n)
	}
	if c.refused != 0 {
		t.Errorf("%d valid requests were refused, want 0", c.refused)
	}
	if c.wronglyOptedOut != 0 {
		t.Errorf("%d starts were refused as opted out on a document that is not, want 0", c.wronglyOptedOut)
	}
	if c.unverified != 0 {
		t.Errorf("%d accounts' chains do not verify, want 0", c.unverified)
	}
	// The faults happened as scheduled, or the figures above mean nothing.
	if c.accepted == 0 {
		t.Errorf("no request was accepted: the workload did not run")
	}
	if faults[faultDelay] > 0 && r.proxy.held.Load() == 0 {
		t.Errorf("%d delay windows held no store reply", faults[faultDelay])
	}
	for _, s := range stack.Services {
		if got := r.stk.Process(s).Restarts(); got < faults[s] {
			t.Errorf("%s: SIGKILLed %d times, restarted %d times", s, faults[s], got)
		}
	}
}

// allRevoked reports whether every one of channels is revoked on doc, as
// its campaigns' suppressed channels show (a document with no campaign
// has no opt-out, so nothing revoked).
func (r *chaosRun) allRevoked(t *testing.T, tok, doc string, channels ...string) bool {
	t.Helper()
	for _, c := range r.api.campaignsAll(t, tok, doc) {
		revoked := map[string]bool{}
		for _, s := range c.Suppressed {
			revoked[s.Channel] = true
		}
		all := true
		for _, ch := range channels {
			all = all && revoked[ch]
		}
		return all
	}
	return false
}
