# Two commands for a newcomer: `make run` and `make test`. Both bootstrap .venv
# from pyproject.toml (idempotent: a second run only checks a stamp file).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q

.PHONY: run test lint typecheck bootstrap-server bootstrap-dev clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ required (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.server-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[server]'
	@touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.server-installed
	$(PIP) -e '.[server,dev]'
	@touch $@

bootstrap-server: $(VENV)/.server-installed
bootstrap-dev: $(VENV)/.dev-installed

run: $(VENV)/.server-installed
	$(BIN)/issuer init
	@echo "issuer on http://127.0.0.1:$${ISSUER_PORT:-8000} (Ctrl-C to stop)"
	exec $(BIN)/issuer serve

test: $(VENV)/.dev-installed
	$(BIN)/ruff check issuer tests scripts
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check issuer tests scripts

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

clean:
	rm -rf $(VENV) issuer.db issuer.db-wal issuer.db-shm
