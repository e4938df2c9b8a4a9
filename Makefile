# chouette-pipeline: `make demo` and `make test` bootstrap everything from a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHOUETTE := $(VENV)/bin/chouette
# A Docker engine, when one runs, provides RabbitMQ and PostgreSQL; otherwise system binaries.
DOCKER := $(shell docker info >/dev/null 2>&1 && echo yes)

.PHONY: help venv lock system-deps browser-deps demo test test-load test-fast lint bench services-up services-down compose-check clean

help:
	@echo "make demo   - set up, train and evaluate a model on the simulator, print the results"
	@echo "make test   - set up, then run the whole test suite (unit, integration, e2e, faults)"
	@echo "make test-load - the load test alone (50 requests, two trainers), with its figures"
	@echo "make lint   - ruff + mypy"
	@echo "make lock   - re-resolve the dependencies into requirements*.lock"
	@echo "make bench  - run every benchmark in bench/"

venv: $(VENV)/.installed

# Exactly the locked versions and files (requirements-dev.lock, sha256-checked), then the
# project itself without resolving anything more.
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

# Re-resolve pyproject.toml's dependencies into requirements.lock and requirements-dev.lock
# (.ci/lock.py; run on Linux x86_64 with Python 3.11, the image's platform).
lock: venv
	$(PY) .ci/lock.py

# Debian packages for the local servers (installed only when root and missing).
system-deps: venv
	$(PY) -c "from localstack.servers import ensure_binaries; ensure_binaries()"

# Debian's chromium and chromedriver for the results page's browser test (same rule).
browser-deps: venv
	$(PY) -c "from localstack.servers import ensure_browser; ensure_browser()"

# With Docker, compose's servers get the local default passwords unless you set your own
# (then set AMQP_URL and DATABASE_URL to match in .env). Compose requires the passwords of
# the services' PostgreSQL roles and RabbitMQ users too (deploy/postgres-roles.sh and
# `chouette migrate` create them).
ROLE_PASSWORDS := $(foreach r,FETCHER TRAINER EVALUATOR API CLI,POSTGRES_$(r)_PASSWORD=$${POSTGRES_$(r)_PASSWORD:-chouette})
ROLE_PASSWORDS += $(foreach r,FETCHER TRAINER EVALUATOR CLI,RABBITMQ_$(r)_PASSWORD=$${RABBITMQ_$(r)_PASSWORD:-chouette})
CHECK_PASSWORDS := $(foreach r,FETCHER TRAINER EVALUATOR API CLI,POSTGRES_$(r)_PASSWORD=x) \
	$(foreach r,FETCHER TRAINER EVALUATOR CLI,RABBITMQ_$(r)_PASSWORD=x)
COMPOSE_SERVERS := POSTGRES_PASSWORD=$${POSTGRES_PASSWORD:-chouette} $(ROLE_PASSWORDS) \
	RABBITMQ_PASSWORD=$${RABBITMQ_PASSWORD:-chouette} docker compose up -d --wait rabbitmq postgres

services-up: venv
ifeq ($(DOCKER),yes)
	$(COMPOSE_SERVERS)
else
	$(CHOUETTE) services up
endif

services-down: venv
ifeq ($(DOCKER),yes)
	POSTGRES_PASSWORD=x RABBITMQ_PASSWORD=x $(CHECK_PASSWORDS) docker compose stop rabbitmq postgres
else
	$(CHOUETTE) services down
endif

demo: venv system-deps
ifeq ($(DOCKER),yes)
	$(COMPOSE_SERVERS)
endif
	$(PY) -m chouette demo

# Two workers, one test file each at a time: the suite waits on servers and subprocesses
# as much as it computes, and a file's tests may share a session stack (tests/e2e).
test: venv system-deps browser-deps
	$(PY) -m pytest -n 2 --dist loadfile --durations=15

# The load fault test alone (also part of make test): 50 training requests, two trainers.
test-load: venv system-deps
	$(PY) -m pytest tests/faults/test_load.py -s

test-fast: venv
	$(PY) -m pytest -m "not slow"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: venv system-deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) -m bench.$$(basename $$b .py) || exit 1; done

compose-check:
	POSTGRES_PASSWORD=x RABBITMQ_PASSWORD=x $(CHECK_PASSWORDS) docker-compose config -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
