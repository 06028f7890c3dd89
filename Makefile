# phasegate — see README.md. Every target works on a fresh machine of this
# kind: Go and the Cloud SDK emulators are preinstalled.
GO        ?= go
PHASEGATE := $(GO) run ./cmd/phasegate
# One emulator pair for the whole run; packages isolate state by project id.
WITH_EMULATORS := $(PHASEGATE) emulators --

.PHONY: help test demo unit bench-gate vet serve plan deploy-check

## help: list the targets
help:
	@grep -h '^## ' $(MAKEFILE_LIST) | sed 's/^## //' | awk -F': ' '{printf "  %-18s %s\n", $$1, $$2}'

## test: vet, then unit and integration tests against the real emulators (the crash-point explorer without -race); fails when a Firestore query they send has no index in deploy/firestore.indexes.json
test: vet
	$(PHASEGATE) emulators --check-indexes deploy/firestore.indexes.json -- sh -c '$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /internal/crashpoints$$) && $(GO) test -count=1 -timeout 20m ./internal/crashpoints/'
	@test -x $(BIGQUERY_EMULATOR) || echo "BigQuery tests skipped: no emulator at $(BIGQUERY_EMULATOR); build it with make bigquery-emulator (about 17 minutes, needs clang)"

.PHONY: crashpoints
## crashpoints: record every external call of each path, then re-run each path with one fault at each call (fail, succeed unseen, crash) and check the invariants after convergence; prints the table and `crashpoints: P paths, C calls, I injections, V violations` (~5 min, no -race)
crashpoints:
	$(PHASEGATE) emulators --check-indexes deploy/firestore.indexes.json -- $(GO) test -count=1 -timeout 20m -run '^TestCrashpoints$$' -v ./internal/crashpoints/

## demo: replay a game day on the emulators and print each gate's decisions
demo:
	$(PHASEGATE) demo

## unit: only tests that need no emulator
unit:
	$(GO) test -count=1 ./internal/config/ ./internal/completion/ ./internal/rules/ ./internal/docid/ \
		./internal/dedup/ ./internal/envelope/ ./internal/errs/ ./internal/gamedate/ ./internal/logging/ ./internal/bus/ ./internal/slacktest/

## vet: go vet and gofmt
vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }

## bench-gate: Firestore RPCs per gate event, and settling 15 concurrent events, on the emulators
bench-gate:
	$(WITH_EMULATORS) $(GO) test -run '^$$' -bench 'BenchmarkGate(RPCs|Contention)' -benchtime 10x ./internal/gate/

## plan: print deploy.sh's plan for an empty project (PROJECT, REGION, PROJECT_NUMBER default to examples)
plan:
	PROJECT=$${PROJECT:-my-project} REGION=$${REGION:-us-west2} PROJECT_NUMBER=$${PROJECT_NUMBER:-123456789012} deploy/deploy.sh --dry-run

## deploy-check: compare PROJECT (REGION, PROJECT_NUMBER, PREFIX…) with deploy.sh's plan, changing nothing; exit 1 on drift, 3 when it cannot read
deploy-check:
	deploy/deploy.sh --check

## serve: host every entry point on 127.0.0.1:8080 against fresh emulators
serve:
	$(WITH_EMULATORS) $(PHASEGATE) serve --addr 127.0.0.1:8080

.PHONY: bench-batch
## bench-batch: one 10,000-player batch from 100 senders, phasegate's design against the running system's and a bare-Create floor, on the emulators (BENCHFLAGS=-short for 2,000)
bench-batch:
	$(WITH_EMULATORS) $(GO) test -run '^$$' -bench BatchDesigns -benchtime 1x -timeout 20m $(BENCHFLAGS) ./internal/batch/

# The BigQuery emulator is cgo over ZetaSQL: ~17 minutes on 2 cores, gcc
# cannot compile it, so clang. Built once into a cache outside the repo;
# `make test` runs the BigQuery tests whenever the binary is there.
BIGQUERY_EMULATOR ?= $(HOME)/.cache/phasegate/bigquery-emulator
export BIGQUERY_EMULATOR

.PHONY: bigquery-emulator
## bigquery-emulator: build the BigQuery emulator into $(BIGQUERY_EMULATOR) (apt-get install clang first)
bigquery-emulator: $(BIGQUERY_EMULATOR)

$(BIGQUERY_EMULATOR): tools/bigquery-emulator/go.mod tools/bigquery-emulator/go.sum
	@mkdir -p $(dir $@)
	cd tools/bigquery-emulator && CGO_ENABLED=1 CC=clang CXX=clang++ nice -n 10 \
		$(GO) build -o $@.tmp github.com/goccy/bigquery-emulator/cmd/bigquery-emulator
	mv $@.tmp $@

LOADTEST := $(WITH_EMULATORS) $(PHASEGATE) loadtest
.PHONY: loadtest loadtest-kill loadtest-100k bench-coldstart soak
## loadtest: a production-scale night through separate serve processes — K×C ∈ {1,4}×{1,8,80} unpaced at 10,000 players beside the in-process floor, a paced 10,000-player night over 300 s with the gates, 5 short paced runs; table on stdout, loadtest-out/results.json and an SVG (LOADTESTFLAGS to change; ~15 min)
loadtest:
	$(LOADTEST) $(LOADTESTFLAGS)

## loadtest-kill: a paced 3,000-player batch in which instance 0 is SIGKILLed halfway and started again (~3 min)
loadtest-kill:
	$(LOADTEST) --out loadtest-out/kill --floor=false --unpaced '' --players 3000 --window 90s --short-runs 2 --short-players 1500 --kill-at 0.5 $(LOADTESTFLAGS)

## soak: 8 nights (gates + a 2,500-player batch each) through 3 serve processes with dozens of SIGKILLs, a Slack outage (500, then hanging), a Pub/Sub emulator restart, 10 % duplicates and periodic sweeps, then sweeps until nothing is owed; prints lost, doubled and copies by cause, writes loadtest-out/soak/soak.json (SOAKFLAGS to change; ~10 min; not part of make test)
soak:
	$(WITH_EMULATORS) $(PHASEGATE) soak --out loadtest-out/soak $(SOAKFLAGS)

## loadtest-100k: one unpaced 100,000-player batch at the deployed settings (BATCH_ARRIVAL_RATE 34), to show there is no cliff (~10–15 min)
loadtest-100k:
	$(LOADTEST) --out loadtest-out/100k --floor=false --paced '' --unpaced 2x80 --players 100000 --arrival-rate 34 $(LOADTESTFLAGS)

## bench-coldstart: the buildpack-built function — binary size, exec → first answered request (5 starts), resident memory after a 10,000-player batch
bench-coldstart:
	$(LOADTEST) --out loadtest-out/coldstart --coldstart 5 $(LOADTESTFLAGS)
