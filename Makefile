# Two commands for a newcomer: `make run` and `make test`. Both bootstrap .venv
# from pyproject.toml (idempotent: a second run only checks a stamp file).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: run test lint typecheck bench bootstrap-server bootstrap-dev clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ required (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.server-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[server]'
	@touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.server-installed
	$(PIP) -e '.[server,dev]'
	@touch $@

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.dev-installed
	$(PIP) -e '.[server,dev,bench]'
	@touch $@

bootstrap-server: $(VENV)/.server-installed
bootstrap-dev: $(VENV)/.dev-installed

run: $(VENV)/.server-installed
	$(BIN)/issuer init
	@echo "issuer on http://127.0.0.1:$${ISSUER_PORT:-8000} (Ctrl-C to stop)"
	exec $(BIN)/issuer serve

test: $(VENV)/.dev-installed
	$(BIN)/ruff check issuer tests scripts bench
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check issuer tests scripts bench

# The benchmark suite (docs/performance.md): about 4 minutes on 2 cores, against the machine's
# PostgreSQL and Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL; defaults on 127.0.0.1). Not part of `make test`.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

clean:
	rm -rf $(VENV) issuer.db issuer.db-wal issuer.db-shm
