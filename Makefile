# Two commands a fresh machine needs: `make demo` (the main job) and `make test` (everything CI runs).
# Each installs what it needs first: a venv in .venv (pip) and the pinned chain tools in node_modules (npm ci).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo devnet test lint contracts bench clean

demo: $(VENV)/.demo-installed node_modules/.installed
	$(BIN)/x402pay demo

devnet: $(VENV)/.demo-installed node_modules/.installed
	$(BIN)/x402pay devnet

test: $(VENV)/.installed node_modules/.installed
	node contracts/build.mjs --check
	$(MAKE) lint
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check x402pay tests bench
	$(BIN)/ruff format --check x402pay tests bench
	$(BIN)/mypy

# Every benchmark, each rewriting its section of BENCHMARKS.md (a few minutes; bench/README.md says more).
bench: $(VENV)/.installed node_modules/.installed
	$(BIN)/python -m bench.bench_import --rounds 5
	$(BIN)/python -m bench.bench_plugin --rounds 15
	$(BIN)/python -m bench.bench_signing --messages 100 --rounds 9
	$(BIN)/python -m bench.bench_transport --sequential 50 --concurrent 300 --rounds 5
	$(BIN)/python -m bench.bench_streaming --rounds 5
	$(BIN)/python -m bench.bench_latency --sequential 10 --first-calls 3 --concurrent 96 --turns 200 --rounds 3
	$(BIN)/python -m bench.bench_mcp --calls 30 --rounds 5
	$(BIN)/python -m bench.bench_ledger --rounds 5
	$(BIN)/python -m bench.bench_fleet --cycles 250 --rounds 2
	$(BIN)/python -m bench.bench_history --cycles 100 --rounds 3
	$(BIN)/python -m bench.bench_cycle --cycles 300 --rounds 3
	$(BIN)/python -m bench.bench_verify --receipts 500 --rounds 3
	$(BIN)/python -m bench.bench_hold_time --payments 20
	$(BIN)/python -m bench.count_channel_gas --calls 1000
	$(BIN)/python -m bench.bench_channels --calls 200 --rounds 5
	$(BIN)/python -m bench.bench_paid_side --sequential 20 --concurrent 64 --streams 10 --rounds 3

contracts: node_modules/.installed
	node contracts/build.mjs

# The demo needs only the demo extra; everything else (tests, lint, benchmarks) the dev extra, which includes it.
$(VENV)/.demo-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[demo]'
	touch $@

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
