package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rcm-platform/rcm/dev/campaignseed"
	"github.com/rcm-platform/rcm/dev/cmd/rcmbench/internal/load"
	"github.com/rcm-platform/rcm/dev/stack"
	"github.com/rcm-platform/rcm/pkg/events"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// docOf is the BEHIND document of a benchmark account.
func docOf(account string) string { return "doc_" + strings.TrimPrefix(account, "user_") }

// closedLoop warms up, then measures op with the configured concurrency
// for d, profiling the measured part, and returns its result and the CPU
// each process used meanwhile. op should not use the context it is given
// for its request: the run's end then lets in-flight requests finish, so
// that every request the service accepted is counted.
func (e *env) closedLoop(ctx context.Context, phase string, d time.Duration, op load.Op) (load.Result, cpuUse, error) {
	if e.cfg.Warmup > 0 {
		if _, err := load.Run(ctx, load.Config{Workers: e.cfg.Concurrency, Duration: e.cfg.Warmup}, op); err != nil {
			return load.Result{}, nil, err
		}
	}
	wait := e.profile(ctx, phase, d)
	cpu0 := e.cpuNow()
	res, err := load.Run(ctx, load.Config{Workers: e.cfg.Concurrency, Duration: d}, op)
	cpu := e.cpuSince(cpu0)
	wait()
	if err == nil && res.Ops == 0 {
		err = fmt.Errorf("%s: no request succeeded: %v", phase, res.FirstErr)
	}
	return res, cpu, err
}

// startOps are the start-campaign requests of accounts, through the
// gateway and straight to the campaign service; created counts the 201s.
type startOps struct {
	e        *env
	ctx      context.Context
	accounts []string
	tokens   map[string]string
	created  atomic.Int64

	mu        sync.Mutex
	campaigns map[string]string // the last campaign started per account
	attempted atomic.Int64
}

func (e *env) newStartOps(ctx context.Context, accounts []string) (*startOps, error) {
	e.logf("holding %d BEHIND documents", len(accounts))
	if err := e.holdBehind(ctx, accounts, docOf); err != nil {
		return nil, err
	}
	tokens, err := e.tokens(accounts)
	if err != nil {
		return nil, err
	}
	return &startOps{e: e, ctx: ctx, accounts: accounts, tokens: tokens, campaigns: map[string]string{}}, nil
}

func (s *startOps) gateway(_ context.Context, _, i int) error {
	a := s.accounts[i%len(s.accounts)]
	req, err := s.e.gatewayRequest(s.ctx, http.MethodPost, startPath(docOf(a)), s.tokens[a], startBody)
	if err != nil {
		return err
	}
	body, err := s.e.do(s.e.http, req, http.StatusCreated)
	if err != nil {
		return err
	}
	s.created.Add(1)
	id, err := campaignID(body)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.campaigns[a] = id
	s.mu.Unlock()
	return nil
}

// attempt clears and records an outbound contact attempt through the
// gateway on the campaign the account started last: answered 201 when
// the rules allow it, 409 when they block it, recorded either way.
func (s *startOps) attempt(_ context.Context, _, i int) error {
	a := s.accounts[i%len(s.accounts)]
	s.mu.Lock()
	id := s.campaigns[a]
	s.mu.Unlock()
	if id == "" {
		return fmt.Errorf("no campaign started for %s", a)
	}
	body := []byte(`{"campaignId":"` + id + `","channel":"email"}`)
	req, err := s.e.gatewayRequest(s.ctx, http.MethodPost, "/v1/documents/"+docOf(a)+"/contact-attempts", s.tokens[a], body)
	if err != nil {
		return err
	}
	if _, err := s.e.do(s.e.http, req, http.StatusCreated); err != nil && !strings.Contains(err.Error(), ": 409 ") {
		return err
	}
	s.attempted.Add(1)
	return nil
}

func (s *startOps) direct(_ context.Context, _, i int) error {
	a := s.accounts[i%len(s.accounts)]
	req, err := s.e.serviceRequest(s.ctx, stack.Campaign, http.MethodPost, startPath(docOf(a)), a, startBody)
	if err != nil {
		return err
	}
	if _, err := s.e.do(s.e.http, req, http.StatusCreated); err != nil {
		return err
	}
	s.created.Add(1)
	return nil
}

// counted adds the campaigns started so far to the run's events.
func (s *startOps) counted() {
	s.e.started += int(s.created.Swap(0))
}

// measure runs op in a closed loop for d (closedLoop) and waits for the
// pipeline to settle.
func (s *startOps) measure(ctx context.Context, phase string, d time.Duration, op load.Op) (load.Result, cpuUse, error) {
	res, cpu, err := s.e.closedLoop(ctx, phase, d, op)
	s.counted()
	if err != nil {
		return res, cpu, err
	}
	return res, cpu, s.e.settle(ctx)
}

// settled waits for an attempt round's events to be recorded and to leave
// their outboxes, and adds to p the attempts recorded (warm-up included)
// and the campaign service's counts since commands and produces were read.
func (s *startOps) settled(ctx context.Context, p *pathRuns, commands, produces float64) error {
	if err := s.e.settle(ctx); err != nil {
		return err
	}
	if err := s.e.drainOutboxes(ctx); err != nil {
		return err
	}
	p.started += int(s.attempted.Swap(0))
	return p.addCounts(ctx, s.e, commands, produces)
}

// pathRuns are the rounds of one start-campaign path.
type pathRuns struct {
	rounds  []load.Result
	backlog int // events still in outboxes, waiting for removal, summed
	started int
	// commands and produces count the campaign service's store commands
	// and Kafka produce requests from the start of the round's load until
	// every event left its outbox, all of them.
	commands, produces float64
	// cpu is the CPU each process used during the rounds' measured load.
	cpu cpuUse
}

// addRound adds a round's result and the CPU it used.
func (p *pathRuns) addRound(res load.Result, cpu cpuUse) {
	p.rounds = append(p.rounds, res)
	p.cpu = p.cpu.plus(cpu)
}

// perStart is the store commands per campaign started (or attempt
// recorded), amortised.
func (p *pathRuns) perStart() float64 { return ratio(p.commands, float64(p.started)) }

// producesPerStart is the Kafka produce requests per campaign started (or
// attempt recorded), amortised.
func (p *pathRuns) producesPerStart() float64 { return ratio(p.produces, float64(p.started)) }

// produceRequests is the metric of every Kafka client's produce requests.
const produceRequests = `rcm_kafka_requests_total{request="Produce"}`

// campaignCounts reads the campaign service's store commands and Kafka
// produce requests so far.
func (e *env) campaignCounts(ctx context.Context) (commands, produces float64, err error) {
	if commands, err = e.metric(ctx, stack.Campaign, storeCommands); err != nil {
		return 0, 0, err
	}
	// The counter of produce requests has no sample before the first.
	if produces, err = e.metric(ctx, stack.Campaign, produceRequests); errors.Is(err, errNoMetric) {
		return commands, 0, nil
	}
	return commands, produces, err
}

// addCounts adds to p the campaign service's counts since commands and
// produces were read.
func (p *pathRuns) addCounts(ctx context.Context, e *env, commands, produces float64) error {
	c, pr, err := e.campaignCounts(ctx)
	p.commands += c - commands
	p.produces += pr - produces
	return err
}

// total is every round's requests and latencies over every round's time.
func (p *pathRuns) total() load.Result {
	var t load.Result
	for i := range p.rounds {
		r := &p.rounds[i]
		t.Ops += r.Ops
		t.Errors += r.Errors
		t.Elapsed += r.Elapsed
		t.Latencies.Merge(&r.Latencies)
		if t.FirstErr == nil {
			t.FirstErr = r.FirstErr
		}
	}
	return t
}

func (p *pathRuns) rates() string {
	var out []string
	for i := range p.rounds {
		out = append(out, fmtRate(p.rounds[i].Rate()))
	}
	return strings.Join(out, ", ")
}

// startCampaign measures start-campaign through the gateway and straight
// to the campaign service, alternating, each round on a fresh stack (the
// background work one run leaves behind would slow the next), and the raw
// insert rate of the same store, once, before the first gateway round,
// with the services idle.
func startCampaign(ctx context.Context, cfg Config) (*Section, error) {
	var gw, direct, att, fresh pathRuns
	attempts := &att
	var raw, rawUpdate load.Result
	var rawLost int64
	run := func(name string, p *pathRuns, phase string, op func(*startOps) load.Op, first bool) error {
		return withEnv(ctx, cfg, name, func(e *env) error {
			ops, err := e.newStartOps(ctx, names("user_b", cfg.Accounts))
			if err != nil {
				return err
			}
			if first {
				e.logf("raw single-document inserts: %d workers for %s", cfg.Concurrency, cfg.RawDuration)
				if raw, err = e.rawInsertOne(ctx); err != nil {
					return err
				}
				e.logf("  %s, p99 %s", fmtRate(raw.Rate()), fmtDur(raw.Latencies.Percentile(99)))
				e.logf("raw read and revision-checked update: %d workers for %s", cfg.Concurrency, cfg.RawDuration)
				if rawUpdate, rawLost, err = e.rawReadUpdate(ctx); err != nil {
					return err
				}
				e.logf("  %s, p99 %s", fmtRate(rawUpdate.Rate()), fmtDur(rawUpdate.Latencies.Percentile(99)))
			}
			e.logf("%s: %d workers for %s", phase, cfg.Concurrency, cfg.Duration)
			commands, produces, err := e.campaignCounts(ctx)
			if err != nil {
				return err
			}
			res, cpu, err := ops.measure(ctx, phase, cfg.Duration, op(ops))
			if err != nil {
				return err
			}
			// The commands counted include the removal of the events no
			// later start took out of their outbox, which the relay
			// makes once they have waited RCM_OUTBOX_REMOVE_AFTER.
			if err := e.drainOutboxes(ctx); err != nil {
				return err
			}
			if err := p.addCounts(ctx, e, commands, produces); err != nil {
				return err
			}
			backlog, err := e.outboxBacklog(ctx)
			p.addRound(res, cpu)
			p.backlog += backlog
			p.started += e.started
			e.logf("  %s, p99 %s, %.2f store commands and %.2f produce requests per start", fmtRate(res.Rate()), fmtDur(res.Latencies.Percentile(99)), p.perStart(), p.producesPerStart())
			if err != nil || attempts == nil || p != &gw {
				return err
			}
			// The same stack, its documents now holding the campaigns
			// just started.
			e.logf("attempt-gateway: %d workers for %s", cfg.Concurrency, cfg.Duration)
			if commands, produces, err = e.campaignCounts(ctx); err != nil {
				return err
			}
			ares, acpu, err := e.closedLoop(ctx, "attempt-gateway", cfg.Duration, ops.attempt)
			if err != nil {
				return err
			}
			attempts.addRound(ares, acpu)
			if err := ops.settled(ctx, attempts, commands, produces); err != nil {
				return err
			}
			e.logf("  %s, p99 %s, %.2f store commands and %.2f produce requests per attempt", fmtRate(ares.Rate()), fmtDur(ares.Latencies.Percentile(99)), attempts.perStart(), attempts.producesPerStart())
			// The same again on documents holding one campaign each, as
			// the start round's records held one or two: a command costs
			// the store more as its record grows.
			ones, err := e.newStartOps(ctx, names("user_t", cfg.Accounts))
			if err != nil {
				return err
			}
			e.logf("attempt-gateway on records of one campaign: starting one per account")
			if _, err := load.Run(ctx, load.Config{Workers: cfg.Concurrency, Count: len(ones.accounts)}, ones.gateway); err != nil {
				return err
			}
			ones.counted()
			if err := e.settle(ctx); err != nil {
				return err
			}
			if err := e.drainOutboxes(ctx); err != nil {
				return err
			}
			if commands, produces, err = e.campaignCounts(ctx); err != nil {
				return err
			}
			fres, fcpu, err := e.closedLoop(ctx, "attempt-gateway-fresh", cfg.Duration, ones.attempt)
			if err != nil {
				return err
			}
			fresh.addRound(fres, fcpu)
			if err := ones.settled(ctx, &fresh, commands, produces); err != nil {
				return err
			}
			e.logf("  %s, p99 %s, %.2f store commands and %.2f produce requests per attempt", fmtRate(fres.Rate()), fmtDur(fres.Latencies.Percentile(99)), fresh.perStart(), fresh.producesPerStart())
			return nil
		})
	}
	for round := range cfg.Rounds {
		if err := run(fmt.Sprintf("start-gateway-%d", round+1), &gw, "start-gateway", func(o *startOps) load.Op { return o.gateway }, round == 0); err != nil {
			return nil, err
		}
		if err := run(fmt.Sprintf("start-direct-%d", round+1), &direct, "start-direct", func(o *startOps) load.Op { return o.direct }, false); err != nil {
			return nil, err
		}
	}
	gwTotal, directTotal, attTotal, freshTotal := gw.total(), direct.total(), att.total(), fresh.total()

	sec := &Section{
		Title:  "Start campaign: through the gateway, straight to the campaign service, raw store insert",
		Header: []string{"path", "requests", "requests/s", "per round", "p50", "p99", "errors", "rate vs direct", "rate vs raw insert"},
	}
	add := func(name string, r *load.Result, rounds string) {
		sec.row(name, fmtInt(r.Ops), fmtRate(r.Rate()), rounds, fmtDur(r.Latencies.Percentile(50)), fmtDur(r.Latencies.Percentile(99)),
			fmtInt(r.Errors), fmtRatio(ratio(r.Rate(), directTotal.Rate())), fmtRatio(ratio(r.Rate(), raw.Rate())))
	}
	add("gateway → campaign → store (POST /v1/documents/{id}/rcm)", &gwTotal, gw.rates())
	add("campaign service directly (principal signed as the gateway signs it)", &directTotal, direct.rates())
	add("raw InsertOne of a document's record as a start leaves it", &raw, fmtRate(raw.Rate()))
	add("raw FindOne by _id, then UpdateOne under its revision: a start's two store commands, no services", &rawUpdate, fmtRate(rawUpdate.Rate()))
	add("clear-and-record a contact attempt through the gateway (POST /v1/documents/{id}/contact-attempts)", &attTotal, att.rates())
	add("the same attempt on records holding one campaign", &freshTotal, fresh.rates())

	sec.note("%d closed-loop workers for %s per round (after a %s warm-up), over %d accounts with one BEHIND document each, "+
		"held by the read model for an hour (written straight into its records); "+
		"%d rounds, gateway and direct alternating, each round on a fresh stack; the rate is all rounds' requests over all "+
		"rounds' time, the percentiles are of all their latencies. The raw baseline ran %s. All in one run.",
		cfg.Concurrency, cfg.Duration, cfg.Warmup, cfg.Accounts, cfg.Rounds, cfg.RawDuration)
	sec.note("A start is one request through the gateway (token check, body validation, signed forward) to the campaign " +
		"service, which reads the document's record by _id and writes it once under its revision compare-and-set: the " +
		"campaign appended, its event appended to the outbox (and the events of the record already published taken out), " +
		"the principal's nonce claimed; off the request path the relay publishes the event, compliance and feed each " +
		"append it, and the relay removes from their outboxes the published events no later write took out within " +
		"RCM_OUTBOX_REMOVE_AFTER (10s). All of that shares the one store (and the two cores) with the requests.")
	sec.note("Raw: InsertOne of a document's record as a start leaves it (campaignseed: one campaign's state, its event in " +
		"the outbox), each on a document of its own, into a scratch database of the same embedded store, with the same " +
		"secondary index, the services idle.")
	sec.note("Raw read and update: the two store commands a start sends, without the services: FindOne of a document's "+
		"record by _id, then UpdateOne filtered on its _id and the revision read, raising the revision and pushing one "+
		"campaign's state and its event onto the outbox, over %d records of one campaign each in another scratch database "+
		"(they grow as a start round's do); a lost compare-and-set reads again (%s were lost, warm-up included). It runs at %s of the raw insert: on this store "+
		"an update of a record costs several inserts (FerretDB reads and decodes the record, applies the operators, "+
		"re-encodes and rewrites it whole), so a start that reads and updates its record is held well under the raw "+
		"insert's rate before any service adds to it; the start through the gateway runs at %s of this baseline.",
		cfg.Accounts, fmtInt(int(rawLost)), fmtRatio(ratio(rawUpdate.Rate(), raw.Rate())), fmtRatio(ratio(gwTotal.Rate(), rawUpdate.Rate())))
	sec.note("Every event was published and recorded by compliance and feed (checked: the relay's publish count, and "+
		"consumer lag 0) before each stack was stopped. At that point %s of the events of the %s campaigns started through "+
		"the gateway (warm-ups included) and %s of %s started directly were still in their documents' outboxes, waiting "+
		"for the relay's clean-up.", fmtInt(gw.backlog), fmtInt(gw.started), fmtInt(direct.backlog), fmtInt(direct.started))
	sec.note("Start p99 ÷ p50 through the gateway: %s; straight to the service: %s. Contact attempts through the gateway ÷ starts "+
		"through the gateway: %s (each attempt round right after its start round, on the same stack, %d workers for %s, "+
		"on the campaign each account started last, channel email: answered 201 when allowed, 409 when blocked, recorded either way).",
		fmtRatio(ratio(float64(gwTotal.Latencies.Percentile(99)), float64(gwTotal.Latencies.Percentile(50)))),
		fmtRatio(ratio(float64(directTotal.Latencies.Percentile(99)), float64(directTotal.Latencies.Percentile(50)))),
		fmtRatio(ratio(attTotal.Rate(), gwTotal.Rate())), cfg.Concurrency, cfg.Duration)
	perDoc := ratio(float64(gw.started), float64(cfg.Accounts*max(1, cfg.Rounds)))
	sec.note("A start round leaves each document's record holding the campaigns it started (%.1f each at its end, warm-up "+
		"included, so about half as many on average while it ran), and the attempt round after it works on those larger "+
		"records; a command costs the embedded store more as its record grows (FerretDB decodes and re-encodes the whole "+
		"record on every update). So each attempt round is then run again, the same way, on %d other documents that hold "+
		"one campaign each (started through the gateway, its event published and taken out of the outbox first): attempts "+
		"on them ÷ starts: %s.", perDoc, cfg.Accounts, fmtRatio(ratio(freshTotal.Rate(), gwTotal.Rate())))
	target := raw.Rate() / 2
	sec.note("CPU per request during the measured rounds (each service's utime and stime from /proc/<pid>/stat, this "+
		"process's rusage; the pipeline's work behind the requests included, as it runs beside them): start through the "+
		"gateway: %s. Start straight to the service: %s. Contact attempt through the gateway: %s. The same attempt on "+
		"records of one campaign: %s. At half the raw insert's rate (%s, the target) the services' CPU per start alone "+
		"would need %.1f cores, of this machine's %d.",
		gw.cpu.perOp(gwTotal.Ops), direct.cpu.perOp(directTotal.Ops), att.cpu.perOp(attTotal.Ops), fresh.cpu.perOp(freshTotal.Ops), fmtRate(target),
		target*ratio(float64(gw.cpu.services()), float64(gwTotal.Ops))/float64(time.Second), runtime.NumCPU())
	sec.note("Store commands per start, all of the campaign service's (its command monitor, rcm_mongodb_command_duration_seconds_count, "+
		"from the start of a round's load until every event had left its outbox, the relay's removals included), amortised: %.2f through the gateway, "+
		"%.2f straight to the service; per contact attempt (warm-ups included, counted the same way): %.2f, and %.2f on records of one campaign.",
		gw.perStart(), direct.perStart(), att.perStart(), fresh.perStart())
	sec.note("Kafka produce requests per start, all of the campaign service's (rcm_kafka_requests_total{request=\"Produce\"}, the relay "+
		"publishing the events, counted over the same spans): %.2f through the gateway, %.2f straight to the service; per contact "+
		"attempt: %.2f, and %.2f on records of one campaign. The relay hands each event to its producer once the record holding it "+
		"is written, and the producer lingers for none: events buffered while it is busy share a request.",
		gw.producesPerStart(), direct.producesPerStart(), att.producesPerStart(), fresh.producesPerStart())
	if gwTotal.Errors+directTotal.Errors+raw.Errors+rawUpdate.Errors+attTotal.Errors+freshTotal.Errors > 0 {
		sec.note("First errors: gateway %v; direct %v; raw %v; raw update %v; attempts %v; attempts on records of one campaign %v.", gwTotal.FirstErr, directTotal.FirstErr, raw.FirstErr, rawUpdate.FirstErr, attTotal.FirstErr, freshTotal.FirstErr)
	}
	return sec, nil
}

// rawInsertOne measures single inserts of documents' records as a start
// leaves them: one campaign's state and its event in the outbox.
func (e *env) rawInsertOne(ctx context.Context) (load.Result, error) {
	coll := e.mongo.Database(scratchDB).Collection(campaignseed.DocumentsCollection)
	if err := ensureRecordIndexes(ctx, coll); err != nil {
		return load.Result{}, err
	}
	accounts := names("user_raw", e.cfg.Accounts)
	res, _, err := e.closedLoop(ctx, "start-raw", e.cfg.RawDuration, func(_ context.Context, _, i int) error {
		a := accounts[i%len(accounts)]
		// A document of its own each time: a record's _id is its document's.
		rec, err := pendingRecord(startedEvent(e.ids, a, e.ids.New("doc_"), time.Now()))
		if err != nil {
			return err
		}
		_, err = coll.InsertOne(ctx, rec)
		return err
	})
	return res, err
}

// drainOutboxes waits until every event published has left its outbox:
// taken out by a later write of its record, or removed by the relay.
func (e *env) drainOutboxes(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		taken, err := e.metric(ctx, stack.Campaign, "rcm_outbox_taken_out_events_total")
		if err != nil {
			return err
		}
		removed, err := e.metric(ctx, stack.Campaign, "rcm_outbox_removed_events_total")
		if err != nil {
			return err
		}
		if int(taken+removed) >= e.started {
			e.logf("  outboxes empty: %d events taken out by later writes, %d removed by the relay", int(taken), int(removed))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("outboxes not empty after a minute: %d of %d events taken out or removed", int(taken+removed), e.started)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// outboxBacklog counts the events still in the documents' outboxes. The
// filter is not on _id, so the store scans the collection: a measurement
// tool's one-off, not a service's query.
func (e *env) outboxBacklog(ctx context.Context) (int, error) {
	cur, err := e.mongo.Database(campaignseed.Database).Collection(campaignseed.DocumentsCollection).Find(ctx,
		bson.D{{Key: "outbox.0", Value: bson.D{{Key: "$exists", Value: true}}}},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "outbox.id", Value: 1}}))
	if err != nil {
		return 0, err
	}
	defer cur.Close(ctx)
	n := 0
	for cur.Next(ctx) {
		var rec struct {
			Outbox []struct {
				ID string `bson:"id"`
			} `bson:"outbox"`
		}
		if err := cur.Decode(&rec); err != nil {
			return n, err
		}
		n += len(rec.Outbox)
	}
	return n, cur.Err()
}

// rawReadUpdate measures a start's two store commands without the
// services: a FindOne of a document's record by _id, then an UpdateOne
// under the revision it read that raises the revision and pushes one
// campaign's state and its event onto the outbox, as a start's write
// does. Each of the accounts' documents is inserted first with one
// campaign; a lost compare-and-set (two workers on one record) reads
// again. The records grow as a start round's do.
func (e *env) rawReadUpdate(ctx context.Context) (res load.Result, lost int64, err error) {
	coll := e.mongo.Database(scratchDB + "_update").Collection(campaignseed.DocumentsCollection)
	if err := ensureRecordIndexes(ctx, coll); err != nil {
		return load.Result{}, 0, err
	}
	accounts := names("user_upd", e.cfg.Accounts)
	seed := make([]any, 0, len(accounts))
	for _, a := range accounts {
		rec, err := pendingRecord(startedEvent(e.ids, a, docOf(a), time.Now()))
		if err != nil {
			return load.Result{}, 0, err
		}
		seed = append(seed, rec)
	}
	if _, err := coll.InsertMany(ctx, seed); err != nil {
		return load.Result{}, 0, err
	}
	var lostCAS atomic.Int64
	res, _, err = e.closedLoop(ctx, "start-raw-update", e.cfg.RawDuration, func(_ context.Context, _, i int) error {
		a := accounts[i%len(accounts)]
		doc := docOf(a)
		campaign, event, err := startElements(startedEvent(e.ids, a, doc, time.Now()))
		if err != nil {
			return err
		}
		for {
			var rec struct {
				Revision int64 `bson:"revision"`
			}
			if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: doc}}).Decode(&rec); err != nil {
				return err
			}
			upd, err := coll.UpdateOne(ctx,
				bson.D{{Key: "_id", Value: doc}, {Key: "revision", Value: rec.Revision}},
				bson.D{
					{Key: "$set", Value: bson.D{{Key: "revision", Value: rec.Revision + 1}}},
					{Key: "$push", Value: bson.D{{Key: "campaigns", Value: campaign}, {Key: "outbox", Value: event}}},
				})
			if err != nil || upd.MatchedCount == 1 {
				return err
			}
			lostCAS.Add(1)
		}
	})
	return res, lostCAS.Load(), err
}

// startElements is the campaign state and the outbox element a start of
// e appends to its document's record, as campaignseed stores them.
func startElements(e events.Event) (campaign, event bson.D, err error) {
	c, err := seedCampaign(e)
	if err != nil {
		return nil, nil, err
	}
	m, err := events.NewMessage(e, "")
	if err != nil {
		return nil, nil, err
	}
	return campaignseed.State(c), campaignseed.OutboxElement(m), nil
}
