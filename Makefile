# serverlab: every target works on a fresh machine; knobs are env vars and flags (README.md, docs/).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONSTRAINTS := constraints.txt

.DEFAULT_GOAL := help

# $(call apt_install,COMMAND,PACKAGE): install a Debian package when COMMAND is missing and we may
# (root with apt); otherwise the tool that needs it says what to install.
apt_install = command -v $(1) >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	echo "==> installing $(2) (apt-get)" && { apt-get install -y -qq $(2) >/dev/null 2>&1 || \
	{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(2) >/dev/null 2>&1; }; }; } || true
.PHONY: help venv lock test-fast test test-compose lint bench up down status logs clean load calibrate report compare tune selfcheck claims faults distance hosts-up hosts-down hosts-status

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "==> creating the virtualenv in $(VENV) and installing serverlab (first run takes a minute)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,bench]'
	@touch $(STAMP)

venv: $(STAMP) ## create the virtualenv and install the pinned versions of constraints.txt (skipped when up to date)

lock: ## refresh constraints.txt: the newest versions pyproject.toml allows, resolved in a scratch virtualenv
	@rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	@.lock-venv/bin/python -m pip install --quiet --upgrade pip
	@.lock-venv/bin/python -m pip install --quiet -e '.[dev,bench]'
	@{ sed -n '/^#/p' $(CONSTRAINTS); .lock-venv/bin/python -m pip freeze --exclude-editable --exclude serverlab; } \
		> $(CONSTRAINTS).tmp && mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	@rm -rf .lock-venv
	@echo "==> wrote $(CONSTRAINTS); \`git diff $(CONSTRAINTS)\` shows what changed, \`make venv\` installs it"

test-fast: venv ## the unit tier only: no PostgreSQL, no servers, seconds (make test runs everything)
	$(PY) -m pytest -q -m unit $(PYTEST_ARGS)

# The embedded PostgreSQL is stopped afterwards unless it was running before (e.g. after `make up`).
test: venv ## run the whole test suite (provisions an embedded PostgreSQL itself)
	@was_up=$$($(PY) -m lab database status >/dev/null 2>&1 && echo yes); \
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ -z "$$was_up" ] && [ -z "$$LAB_DATABASE_URL" ]; then $(PY) -m lab database down; fi; \
	exit $$status

test-compose: venv ## the contract suite against the Docker Compose stack (needs a Docker engine)
	$(PY) -m pytest --compose tests/test_contract.py $(PYTEST_ARGS)

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check servers lab loadtests tests
	$(VENV)/bin/mypy servers lab loadtests tests

bench: venv ## CPU per request of every server vs its stack's bare reference (4 endpoints), metrics on vs off
	@$(call apt_install,wrk,wrk)
	$(PY) -m lab bench $(BENCH_ARGS)

faults: venv ## every server through overload, DB faults, slow clients, bad input (FAULTS_ARGS=--quick)
	$(PY) -m lab faults $(FAULTS_ARGS)

distance: venv ## each server at 0, 5, 50 ms added RTT, one offered rate: threads, RSS, conns, p99 (DISTANCE_ARGS)
	$(PY) -m lab distance $(DISTANCE_ARGS)

# VARIANTS (LAB_VARIANTS): extra servers, e.g. VARIANTS="asyncio-pool20=asyncio:LAB_POOL_SIZE=20" (docs/load.md).
load: venv ## drive every server with the Locust scenarios (PROFILE SERVERS VARIANTS SCENARIOS USERS DURATION REPS ...)
	$(PY) -m lab load $(LOAD_ARGS) $(if $(VARIANTS),--variants '$(VARIANTS)')

selfcheck: venv ## A/A (same settings twice: no change) and A/B (pool 2 vs 10: a change) (SELFCHECK_ARGS)
	$(PY) -m lab selfcheck $(SELFCHECK_ARGS)

calibrate: venv ## measure what the load generator can drive on this machine
	$(PY) -m lab calibrate --force

report: venv ## rebuild a run's report from its raw files (RUN=<run-id>, default: the latest)
	$(PY) -m lab report reports/$(or $(RUN),latest)

claims: venv ## the folklore on threads, greenlets and event loops, measured here (CLAIMS_ARGS, LAB_CLAIMS_*)
	$(PY) -m lab claims $(CLAIMS_ARGS)

compare: venv ## compare two runs (A=<run-id> B=<run-id> COMPARE_ARGS; two claims runs work too)
	@if [ -z "$(A)" ] || [ -z "$(B)" ]; then echo "usage: make compare A=<run-id> B=<run-id> (run ids: ls reports/)"; exit 2; fi
	$(PY) -m lab compare $(A) $(B) $(COMPARE_ARGS)

tune: venv ## sweep a knob and recommend a value (SERVER PARAM VALUES SCENARIO SLO_P99_MS REPS DURATION USERS)
	$(PY) -m lab tune $(TUNE_ARGS)

up: venv ## start PostgreSQL and the servers (LAB_SERVERS, LAB_BACKEND), wait until healthy
	$(PY) -m lab up

down: ## stop the servers (graceful, then SIGKILL) and the embedded PostgreSQL
	@if [ -x $(PY) ]; then $(PY) -m lab down; else echo "nothing to stop: no virtualenv yet"; fi

status: venv ## what runs, and its health
	$(PY) -m lab status

logs: venv ## tail the logs (FOLLOW=0 prints the last lines and exits)
	$(PY) -m lab logs $(if $(filter 0,$(FOLLOW)),--no-follow)

hosts-up: venv ## create the test hosts a, b, c (network namespaces on 198.18.0.0/24; needs root)
	$(PY) -m lab hosts up

hosts-down: venv ## stop what runs on the test hosts and remove them (nothing is left)
	$(PY) -m lab hosts down

hosts-status: venv ## the test hosts, their addresses and the processes on them
	$(PY) -m lab hosts status

clean: ## stop everything, remove the database's home (data, log, binaries copy) and the run folder (never reports/)
	@if [ -x $(PY) ]; then $(PY) -m lab clean; else rm -rf .lab; fi
