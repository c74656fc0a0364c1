# Switchboard: every set-up step lives here so that a fresh machine needs only `make run` / `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` needs the server's own dependencies only; tests, lint and benchmarks add the dev tools.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
CONFIG ?= config.json
NODE_DIR := tests/sdk/node

.PHONY: run test lint fmt docs bench bench-scale bench-deps test-scale install clean sdk-deps services

$(BIN)/python:
	@echo "==> creating $(VENV)"
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --progress-bar on pip

$(RUN_STAMP): pyproject.toml broker/protocol/proto/client.proto | $(BIN)/python
	@echo "==> installing Switchboard and its runtime dependencies into $(VENV)"
	$(BIN)/python -m pip install --progress-bar on -e .
	@echo "==> generating the protocol code"
	$(BIN)/python -m broker.protocol.proto.generate
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml broker/protocol/proto/client.proto | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m broker.protocol.proto.generate
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

sdk-deps: $(STAMP)
	@test $(NODE_DIR)/node_modules/.installed -nt $(NODE_DIR)/package-lock.json || (cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed)

$(CONFIG): | $(RUN_STAMP)
	$(BIN)/switchboard genconfig -c $(CONFIG)
	@echo "==> wrote $(CONFIG) (secrets for tokens and the API; the README walkthrough uses it)"

run: $(RUN_STAMP) $(CONFIG)
	@echo "==> starting the server with $(CONFIG) (Ctrl-C stops it)"
	$(BIN)/switchboard -c $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check broker router shards tests bench
	$(BIN)/ruff format --check broker router shards tests bench
	$(BIN)/mypy broker router shards

fmt: $(STAMP)
	$(BIN)/ruff format broker router shards tests bench
	$(BIN)/ruff check --fix broker router shards tests bench

# The README's option tables, generated from the option declarations (a test checks they are current).
docs: $(STAMP)
	$(BIN)/python -m broker.config_docs README.md

# Services the tests start themselves (never the system's): Debian's redis-server and redis-cli,
# openssl for the certificate of the TLS test, systemd-analyze to verify the units in deploy/systemd,
# and Chromium, driven headless by Playwright to test the admin web page.
services:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v openssl >/dev/null \
		&& command -v systemd-analyze >/dev/null && command -v chromium >/dev/null || { \
		echo "==> installing redis-server, redis-tools, openssl, systemd (for systemd-analyze) and chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			redis-server redis-tools openssl systemd chromium >/dev/null; }

test: lint sdk-deps services
	$(BIN)/pytest -q

# Whole-system runs at full size (10k connections, 2 shards); each exits non-zero when a correctness
# check fails. Several minutes each: not part of `make test`.
test-scale: $(STAMP)
	$(BIN)/python -m bench.connections_bench
	$(BIN)/python -m bench.channel_features_bench
	$(BIN)/python -m bench.fanout_bench
	$(BIN)/python -m bench.churn_bench
	$(BIN)/python -m bench.hold_bench
	$(BIN)/python -m bench.cel_worstcase_bench
	$(BIN)/python -m bench.slow_sockets_bench
	$(BIN)/python -m bench.writer_restart_bench --kill writer
	$(BIN)/python -m bench.writer_restart_bench --kill router

# The benchmarks' own tools: matplotlib for the ladder's plots, Node's ws to measure beside Switchboard.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_NODE := bench/node_ws
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP)
	@test $(BENCH_NODE)/node_modules/.installed -nt $(BENCH_NODE)/package-lock.json || (cd $(BENCH_NODE) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed)

bench: bench-deps
	$(BIN)/pytest -q bench -m 'slow or not slow'

# The whole-system ladder, 1k -> 10k -> 100k -> 500k connections, Switchboard beside Node's ws and the
# bare uvloop ceiling (about half an hour); tables to bench/RESULTS.md, plots to bench/plots/.
bench-scale: bench-deps
	$(BIN)/python -m bench.scale_ladder --append-results

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
