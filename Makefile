# The two commands in README.md: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
BIN := .venv/bin
# The browser tests drive Debian's Chromium (never a downloaded one); apt installs it once.
CHROMIUM_PATH ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install demo serve test lint check bench bench-http bench-settlement screenshot

$(BIN)/clearinghouse: pyproject.toml
	$(PYTHON) -m venv .venv
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(CHROMIUM_PATH):
	$(SUDO) apt-get install -y --no-install-recommends chromium \
		|| ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium)

install: $(BIN)/clearinghouse

demo: install
	$(BIN)/clearinghouse demo

test: install $(CHROMIUM_PATH)
	CHROMIUM_PATH=$(CHROMIUM_PATH) $(BIN)/pytest -n 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

bench: install
	$(BIN)/python -m bench.ledger_bench

# The signed HTTP API end to end: `clearinghouse serve` under a load generator (docs/benchmarks.md).
bench-http: install
	$(BIN)/python -m bench.http_bench

# A day of a million settleable entries, then settle, reports, reconciliation, audit export and
# verify, liability history, each timed (docs/benchmarks.md).
bench-settlement: install
	$(BIN)/python -m bench.settlement_bench

# The settlement page's picture in docs/, taken by the browser test.
screenshot: install $(CHROMIUM_PATH)
	CHROMIUM_PATH=$(CHROMIUM_PATH) $(BIN)/pytest tests/browser -k approve --screenshots docs
