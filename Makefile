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

.PHONY: services run test down fmt clippy

services:
	scripts/services.sh up

run: services
	$(CARGO) run --bin runwatch -- run $(ARGS)

test: services
	$(CARGO) build --all-targets
	eval "$$(scripts/find-binaries.sh)"; export NATS_SERVER_BIN PG_BIN_DIR; \
	$(CARGO) test --all-targets -- --test-threads=$(TEST_THREADS)
	@if [ -f "$(CHECK_SCENARIOS)" ]; then \
		echo "python3 $(CHECK_SCENARIOS) $(TARGET_DIR)/debug/runwatch $(SHARED)/scenarios"; \
		python3 "$(CHECK_SCENARIOS)" $(TARGET_DIR)/debug/runwatch "$(SHARED)/scenarios"; \
	else \
		echo "skipping conformance scenarios: $(CHECK_SCENARIOS) not found"; \
	fi

down:
	scripts/services.sh down

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings
