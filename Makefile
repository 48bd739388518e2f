# The two commands a new machine needs:  `make run`  and  `make test`.
# `make check` is the quick loop: every check that needs no test servers, Docker or cluster.
# Everything else here is a building block of those or a developer convenience.

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
# `make run HOST=0.0.0.0` listens on every interface. Only an argument sets it, never the
# environment: some shells export HOST as the machine's name.
HOST = 127.0.0.1
# Progress lines name the command that was typed: "make run: installing uv ...".
GOAL := make $(or $(firstword $(MAKECMDGOALS)),run)

.PHONY: run test check lint typecheck unit integration e2e browser bench bench-cluster deps test-deps clean k8s-check compose-e2e

## run: the development shape, the monolith on http://localhost:5000 (SQLite in ./data;
## no Docker, Redis or PostgreSQL). PORT=8080 and HOST=0.0.0.0 change where it listens.
run: deps
	@echo "$(GOAL): starting the monolith (the development shape: one process, SQLite in $${CLOUDVOTE_DATA_DIR:-data}/)"
	@$(BIN)/cloudvote dev --host $(HOST) --port $${PORT:-5000} --data-dir $${CLOUDVOTE_DATA_DIR:-data}

## test: lint, types, then every test tier against real Redis, PostgreSQL and Chromium
test: deps test-deps lint typecheck
	$(BIN)/python -m pytest
	@echo "make test: not run here: manifests (scripts/k8s-check), compose (scripts/compose-e2e, Docker engine), cluster (scripts/cluster-e2e, root, builds a cluster); .ci/run runs them all"

## check: lint, types, unit tests and the manifests (scripts/k8s-check; kustomize is built
## with Go): no Docker engine, no cluster, and none of the test tier's Debian packages.
## Integration and e2e start real Redis, PostgreSQL and Chromium, which
## scripts/install-test-deps installs as root, so they stay in `make test`.
check: lint typecheck unit k8s-check
	@echo "make check: not run here: integration and e2e (make test), compose (scripts/compose-e2e), cluster (scripts/cluster-e2e)"

unit: deps
	$(BIN)/python -m pytest tests/unit

integration: deps test-deps
	$(BIN)/python -m pytest tests/integration

e2e: deps test-deps
	$(BIN)/python -m pytest tests/e2e

## lint: ruff over the Python, shellcheck over every shell script in scripts/ and deploy/
## (scripts/lint-shell installs Debian's shellcheck the first time, as root or with sudo),
## hadolint over every Dockerfile (.hadolint.yaml), actionlint over the forge workflow
## (built from its Go module by scripts/k8s-tools, once)
lint: deps
	$(UV) lock --check --python $(PYTHON) --quiet
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/lint-imports
	scripts/lint-shell
	git ls-files -z -- Dockerfile '*/Dockerfile' | xargs -0 $(BIN)/hadolint
	$$(scripts/k8s-tools path actionlint) .github/workflows/*.yml

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
# PyPI the first time, into the user's site-packages. PIP_ROOT_USER_ACTION=ignore: as root
# (CI, containers) pip would warn that root should use a virtualenv, which is what uv then
# makes. PIP_BREAK_SYSTEM_PACKAGES=1: Debian's Python refuses even --user installs
# (PEP 668); uv has no dependencies, so it shadows none of Debian's packages. Older pips
# ignore both variables.
deps:
	@$(UV) --version >/dev/null 2>&1 || { \
		echo "$(GOAL): installing uv $(UV_VERSION) (pip install --user)"; \
		PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 $(PYTHON) -m pip install \
			--quiet --user --disable-pip-version-check "uv==$(UV_VERSION)"; }
	@[[ -x $(BIN)/python ]] || echo "$(GOAL): creating the virtualenv in $(VENV) (uv sync, from uv.lock; a minute the first time)"
	@$(UV) sync --frozen --python $(PYTHON) --quiet

test-deps:
	scripts/install-test-deps

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
