# The RCM platform. `make run` starts the local stack, `make test` runs every
# module's tests. Nothing here needs a tool installed by hand: Go fetches
# what it needs from the module proxy.

GO        ?= go
BIN       := $(CURDIR)/bin
MODULES    = $(shell $(GO) list -m -f '{{.Dir}}')
SERVICES  := gateway campaign compliance feed rcmctl
TESTFLAGS ?= -count=1 -timeout 15m
# FUZZTIME is executions per target (Nx) rather than a duration: with a
# duration, Go 1.26's fuzzing coordinator can report "context deadline
# exceeded" as a failure when the time runs out on a busy machine
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME  ?= 200000x

export RCM_BIN_DIR := $(BIN)
export RCM_TEST_FIGURES := $(BIN)/test-figures.txt

.PHONY: all build run test tools vet fmt-check bench bench-growth fuzz clean tidy chaos browser-test

all: build

## build: every binary to bin/
build:
	@mkdir -p $(BIN)
	@for s in $(SERVICES); do $(GO) build -o $(BIN)/$$s ./services/$$s || exit 1; done
	$(GO) build -o $(BIN)/rcmstack ./dev/cmd/rcmstack

## run: the whole system locally (embedded Kafka and MongoDB, no Docker)
run: build
	$(BIN)/rcmstack

## test: vet, format check, and every module's tests
test: build vet fmt-check tools
	@rm -f $(RCM_TEST_FIGURES)
	@for d in $(MODULES); do \
		echo "== $$d"; \
		(cd $$d && $(GO) test $(TESTFLAGS) ./...) || exit 1; \
	done
	@if [ -s $(RCM_TEST_FIGURES) ]; then echo "== figures"; cat $(RCM_TEST_FIGURES); fi

## tools: what the tests run besides Go (promtool and prometheus, from Debian)
tools:
	@deploy/prometheus/install.sh

## browser-test: the local stack's page and a page of another origin in
## headless Chromium (Debian's chromium and playwright-core from npm,
## installed by dev/browser/install.sh when missing); the screenshots go
## to bin/browser-test/
browser-test: build
	@dev/browser/install.sh
	cd dev/browser && node browser-test.mjs

vet:
	@for d in $(MODULES); do (cd $$d && $(GO) vet ./...) || exit 1; done

fmt-check:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: the benchmark figures (several minutes), printed and written to
## BENCHMARKS.md; then the compliance tree's proofs at 100 and 100,000
## entries (store reads per proof), printed
bench: build
	$(GO) build -o $(BIN)/rcmbench ./dev/cmd/rcmbench
	$(BIN)/rcmbench -out BENCHMARKS.md
	cd services/compliance && $(GO) test -count=1 -run '^$$' -bench '^BenchmarkProof$$' -benchtime 200x -timeout 30m ./internal/tree/

## bench-growth: the growth scenario alone with a 1,000,000-entry account
## (make bench keeps 100,000 to stay within ~10 minutes: seeding a million
## and verifying it take far longer), written to BENCHMARKS-growth.md
bench-growth: build
	$(GO) build -o $(BIN)/rcmbench ./dev/cmd/rcmbench
	$(BIN)/rcmbench -scenarios growth -growth-large-entries 1000000 -out BENCHMARKS-growth.md

## chaos: the long variants: the chaos test of make test with faults for
## RCM_CHAOS_DURATION (default 5m; RCM_CHAOS_SEED runs a printed schedule
## again), and the catch-up after a crash at 2,000 events a batch
chaos: build
	@rm -f $(RCM_TEST_FIGURES)
	cd pkg && RCM_TEST_LONG=1 $(GO) test -count=1 -run '^TestCatchUpAfterCrash$$' ./seqlog/
	@cd dev && RCM_CHAOS_DURATION=$${RCM_CHAOS_DURATION:-5m} $(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./e2e/; s=$$?; \
		if [ -s $(RCM_TEST_FIGURES) ]; then echo "== figures"; cat $(RCM_TEST_FIGURES); fi; exit $$s

## fuzz: each fuzz target for FUZZTIME (executions, or a duration)
fuzz:
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzParseStart$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/api
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzParseOptOut$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/api
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzParseConsent$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/api
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzParseAttempt$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/api
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzParseOutcome$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/api
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzParseClearance$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/api
	cd services/gateway && $(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/auth
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzCanonicalPlain$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./auditlog

tidy:
	@for d in $(MODULES); do (cd $$d && $(GO) mod tidy) || exit 1; done

clean:
	rm -rf $(BIN)
