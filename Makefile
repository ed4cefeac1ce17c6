# serverlab: every target works on a fresh machine; knobs are env vars (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help venv test lint bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> creating the virtualenv in $(VENV) and installing serverlab (first run takes a minute)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create the virtualenv and install everything (skipped when up to date)

test: venv ## run the whole test suite (provisions an embedded PostgreSQL itself)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check servers lab loadtests tests
	$(VENV)/bin/mypy servers lab loadtests tests

bench: venv ## rps of /json and /db per server, metrics on vs off, asyncio vs a bare aiohttp handler
	$(PY) -m lab.bench $(BENCH_ARGS)
