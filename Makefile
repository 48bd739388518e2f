# The two commands a new machine needs:  `make run`  and  `make test`.
# Everything else here is a building block of those two or a developer convenience.

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
# uv must use this machine's Python and trust the system CA store (TLS may be intercepted).
export UV_PYTHON_DOWNLOADS := never
export UV_SYSTEM_CERTS := 1
# `python3 -m uv` works wherever pip put uv, whether or not its bin directory is on PATH.
UV := $(PYTHON) -m uv

.PHONY: run test lint typecheck unit integration e2e browser bench bench-cluster deps test-deps clean k8s-check compose-e2e

## run: the monolith on http://localhost:5000 (SQLite in ./data; no Docker, Redis or PostgreSQL)
run: deps
	$(BIN)/cloudvote dev --port $${PORT:-5000} --data-dir $${CLOUDVOTE_DATA_DIR:-data}

## test: lint, types, then every test tier against real Redis, PostgreSQL and Chromium
test: deps test-deps lint typecheck
	$(BIN)/python -m pytest

unit: deps
	$(BIN)/python -m pytest tests/unit

integration: deps test-deps
	$(BIN)/python -m pytest tests/integration

e2e: deps test-deps
	$(BIN)/python -m pytest tests/e2e

lint: deps
	$(UV) lock --check --python $(PYTHON) --quiet
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy

typecheck: deps
	$(BIN)/mypy

## bench: ingest, drain and freshness benchmarks; JSON and PNG land in bench/results/
bench: deps test-deps
	$(BIN)/python -m bench.run

## bench-cluster: Service vs direct ingest and pod startup on the current kubectl context's
## cluster, from its node (method in bench/cluster_bench.py); writes bench/results/cluster.json
bench-cluster: deps test-deps
	$(BIN)/python -m bench.cluster_bench

## k8s-check: render every kustomize overlay and scenario, validate them offline, test them
k8s-check: deps
	scripts/k8s-check

## compose-e2e: compose.yaml on a real Docker engine (installs and starts one if needed)
compose-e2e: deps
	scripts/compose-e2e

# The locked environment; `uv sync` is a no-op when nothing changed. uv itself comes from
# PyPI the first time.
deps:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --user "uv==$(UV_VERSION)"
	$(UV) sync --frozen --python $(PYTHON) --quiet

test-deps:
	scripts/install-test-deps

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
