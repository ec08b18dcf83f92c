# Tern: the commands a newcomer needs. `make run` starts the broker, `make test` runs
# everything CI runs.

CARGO ?= cargo
# How the Python and JavaScript suites get target/debug/ternd, the broker they start. Alone,
# each builds it (debug profile). Under `make test`, `cargo test` has just built it there
# for the integration tests (its test profile), so they take that one: building another
# from the same sources cost CI a minute.
BUILD_TERND ?= $(CARGO) build -p tern-broker --bin ternd
# Extra flags: for ternd with `make run`, e.g. `make run ARGS="--workers 2 --log-level
# debug"`; for the scenario with `make profile`, e.g. `make profile ARGS="--size 16"`.
ARGS ?=

.PHONY: run build test test-python test-js fmt fmt-check lint fuzz fuzz-websocket clean

## run: build in release mode and start ternd with its defaults (text port 127.0.0.1:4222)
run:
	$(CARGO) run --release -p tern-broker --bin ternd -- $(ARGS)

# The Python interop tests' own environment: a venv in target/py with interop/python's
# pinned requirements (from PyPI), made once and remade when they change.
PY_ENV := target/py
PY_DIR := interop/python

## build: build everything in release mode
build:
	$(CARGO) build --release --workspace

## test: formatting, lints, then every unit, property and integration test, then the
## Python interop tests (nats-py against the ternd the Rust tests built; the venv first,
## since tern-transport's WebSocket interop test runs its Python client), then the
## JavaScript ones (nats.ws in Node and headless Chromium), then the native clients'
## own suites (TypeScript, Python)
test: fmt-check lint $(PY_ENV)/.installed nats-server
	TERN_PYTHON=$(abspath $(PY_ENV))/bin/python $(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	$(MAKE) test-python BUILD_TERND=true
	$(MAKE) test-js BUILD_TERND=true
	$(MAKE) test-client-js BUILD_TERND=true
	$(MAKE) test-client-python BUILD_TERND=true

# nats-server, from Debian's packages when missing: the bridge tests start a real cluster.
.PHONY: nats-server
nats-server:
	@command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || \
		(apt-get update -qq && apt-get install -y -qq nats-server)

$(PY_ENV)/.installed: $(PY_DIR)/requirements.txt
	python3 -m venv $(PY_ENV)
	$(PY_ENV)/bin/pip install --quiet --disable-pip-version-check -r $(PY_DIR)/requirements.txt
	touch $@

## test-python: ruff (format and lint), mypy --strict and pytest on interop/python, against
## target/debug/ternd (built first)
test-python: $(PY_ENV)/.installed
	$(BUILD_TERND)
	cd $(PY_DIR) && ../../$(PY_ENV)/bin/ruff format --check . \
		&& ../../$(PY_ENV)/bin/ruff check . \
		&& ../../$(PY_ENV)/bin/mypy . \
		&& ../../$(PY_ENV)/bin/pytest -q -p no:cacheprovider

# The JavaScript interop tests' packages: interop/js's node_modules from its lock file,
# and the web chat example's (its nats.ws, which the type check resolves its imports to),
# remade when a lock file changes.
JS_DIR := interop/js
CHAT_DIR := examples/web-chat

$(JS_DIR)/node_modules/.installed: $(JS_DIR)/package-lock.json $(CHAT_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund
	cd $(CHAT_DIR) && npm ci --no-audit --no-fund
	touch $@

## test-js: prettier, eslint, tsc and node --test on interop/js (and examples/web-chat):
## nats.ws against target/debug/ternd's WebSocket port, in Node and in headless Chromium
## (installed by interop/js/install-chromium.sh when missing, skipped when it cannot be)
test-js: $(JS_DIR)/node_modules/.installed
	$(BUILD_TERND)
	$(JS_DIR)/install-chromium.sh
	cd $(JS_DIR) && npm test

# The native clients' suites, each in its own fragment next to its code.
include clients/js/client.mk
include clients/python/client.mk

## fmt: format the code
fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

## lint: clippy with warnings as errors
lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## fuzz: run the text decoder fuzzer (needs a nightly toolchain and cargo-fuzz)
fuzz:
	cd protocol/fuzz && $(CARGO) +nightly fuzz run text_decoder

## fuzz-websocket: the WebSocket transport's fuzzer for FUZZ_TIME seconds (cargo-fuzz;
## the stable toolchain with RUSTC_BOOTSTRAP=1 stands in for a nightly one)
FUZZ_TIME ?= 300
fuzz-websocket:
	cd transport/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run websocket -- \
		-max_total_time=$(FUZZ_TIME) -max_len=4096

clean:
	$(CARGO) clean

# Benchmarks (tern-bench, see docs/benchmarks.md). Results and charts go to target/bench/.
# tern-bench exits with status 1 when a scenario reported a problem (after printing it all).
BENCH_FLAGS ?=

.PHONY: bench bench-compare bench-micro bench-transports soak

## bench: build release, run the standard suite against fresh ternds, text and binary ports
bench:
	$(CARGO) build --release -p tern-broker --bin ternd
	$(CARGO) build --release -p tern-bench
	mkdir -p target/bench
	target/release/tern-bench --json target/bench/bench.json suite \
		--ternd target/release/ternd --out-dir target/bench $(BENCH_FLAGS)

## bench-transports: pubsub, latency and idle connections over tcp, tls, websocket and wss,
## ternd vs nats-server (medians of 5; BENCH_FLAGS=--short for a quick look)
bench-transports:
	command -v nats-server >/dev/null || (apt-get update && apt-get install -y nats-server)
	$(CARGO) build --release -p tern-broker --bin ternd
	$(CARGO) build --release -p tern-bench
	mkdir -p target/bench
	target/release/tern-bench --json target/bench/transports.json transports \
		--ternd target/release/ternd --nats-server "$$(command -v nats-server)" \
		--runs 5 --out-dir target/bench/transports $(BENCH_FLAGS)

## bench-compare: the suite against ternd (both ports) and nats-server (installed if missing), with ratios
## (one run of each scenario; BENCH_FLAGS="--runs 3" runs each 3 times, interleaved, and shows medians)
bench-compare:
	command -v nats-server >/dev/null || (apt-get update && apt-get install -y nats-server)
	$(CARGO) build --release -p tern-broker --bin ternd
	$(CARGO) build --release -p tern-bench
	mkdir -p target/bench
	target/release/tern-bench --json target/bench/compare.json suite \
		--ternd target/release/ternd --nats-server "$$(command -v nats-server)" \
		--out-dir target/bench $(BENCH_FLAGS)

## soak: build release, then at least ten minutes of an audience, acknowledged traffic and
## every kind of hostile client against ternd with small budgets; prints the report (RSS over
## time, counters, checks) to target/soak/ and exits non-zero when a check fails.
## `make soak SOAK_FLAGS="--duration 30m"` for longer.
SOAK_FLAGS ?=
soak:
	$(CARGO) build --release -p tern-broker --bin ternd
	$(CARGO) build --release -p tern-bench
	mkdir -p target/soak
	status=0; target/release/tern-bench --json target/soak/soak.json soak \
		--ternd target/release/ternd --out-dir target/soak $(SOAK_FLAGS) \
		> target/soak/soak.txt || status=$$?; cat target/soak/soak.txt; exit $$status

## profile: build release, start ternd (2 workers, free ports, a temp data dir) under
## `perf record`, run one scenario against it (SCENARIO=pubsub, its flags in ARGS), stop
## ternd with SIGTERM; writes the flame graph target/bench/profile-$(SCENARIO).svg and
## prints the top 15 functions by self time. Needs perf (Debian: apt-get install linux-perf).
## `make profile SCENARIO=fanout ARGS="-s 10 --duration 5s"`; PERF_FLAGS for perf record.
SCENARIO ?= pubsub
PERF_FLAGS ?= -e cpu-clock -g -F 999
.PHONY: profile
profile:
	@command -v perf >/dev/null || { echo "make profile: perf not found; install it" \
		"(Debian: apt-get install linux-perf)" >&2; exit 1; }
	$(CARGO) build --release -p tern-broker --bin ternd
	$(CARGO) build --release -p tern-bench
	mkdir -p target/bench
	target/release/tern-bench profile --ternd target/release/ternd --workers 2 \
		--perf-data target/bench/perf.data --out target/bench/profile-$(SCENARIO).svg \
		--perf-flags "$(PERF_FLAGS)" -- $(SCENARIO) $(ARGS)

## bench-micro: criterion micro-benchmarks of the codecs and subject rules (protocol/benches),
## of the subscription index (broker/benches) and of the transports' framing (transport/benches)
bench-micro:
	$(CARGO) bench -p tern-protocol
	$(CARGO) bench -p tern-broker --bench index
	$(CARGO) bench -p tern-transport --bench framing
