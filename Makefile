# The two commands in README.md: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
BIN := .venv/bin

.PHONY: install demo serve test lint check bench

$(BIN)/clearinghouse: pyproject.toml
	$(PYTHON) -m venv .venv
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/clearinghouse

demo: install
	$(BIN)/clearinghouse demo

test: install
	$(BIN)/pytest -n 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

bench: install
	$(BIN)/python -m bench.ledger_bench
