# Everything a newcomer or CI needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEV    ?= .steadfast/dev
ENGINE ?= local
# daprd's build needs github.com/dapr/durabletask-go, which some Go module proxies refuse: third_party/ holds its
# source. Where the proxy serves it, `make STEADFAST_GO_REPLACE= ...` builds from the proxy (the same code).
export STEADFAST_GO_REPLACE ?= github.com/dapr/durabletask-go=$(CURDIR)/third_party/durabletask-go-v0.12.4.tar.gz

.PHONY: help venv binaries lint typecheck crds crds-check test unit integration statestores replicas demo dev-up dev-down clean e2e-kind

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed  ## create the virtual environment with pinned dependencies

binaries: venv  ## build (or reuse) etcd, kube-apiserver, kube-controller-manager, kubectl, helm, daprd, placement, scheduler
	$(BIN)/steadfast dev build etcd kube-apiserver kube-controller-manager kubectl helm daprd placement scheduler

lint: venv typecheck  ## ruff (lint and format), strict mypy, import contracts, hadolint
	$(BIN)/ruff check operator tests bench examples
	$(BIN)/ruff format --check operator tests bench examples
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

# `mypy` alone checks the operator, bench/ and the tests but for three folders (pyproject's [tool.mypy] says why):
# each of them has its own conftest.py, and one mypy run cannot hold two modules of one name.
typecheck: venv  ## strict mypy over the operator, the tests and the benchmarks
	$(BIN)/mypy
	$(BIN)/mypy tests/engine/*.py
	$(BIN)/mypy tests/integration/*.py
	$(BIN)/mypy tests/workflows/*.py

crds: venv  ## regenerate crds/ from the API models
	$(BIN)/steadfast crds
	cp crds/*.yaml charts/steadfast/files/crds/  # the chart ships the same files

crds-check: venv
	$(BIN)/steadfast crds --check

unit: venv  ## tests that need no servers
	$(BIN)/pytest tests/unit

test: venv binaries lint  ## the full suite: lint, unit, engine and integration tests on a real control plane
	$(BIN)/pytest
	$(MAKE) statestores
	$(MAKE) replicas

# The tier on daprd with the chart's PostgreSQL and Redis state-store components, servers started by the tests
# (needs the Debian packages postgresql and redis-server). STEADFAST_STATESTORE_SAGAS=100 runs the restart test bigger.
statestores: venv binaries  ## sagas, approval, monitor, engine SIGKILL and a database restart on daprd+PostgreSQL and daprd+Redis
	STEADFAST_ENGINES=daprd-postgres,daprd-redis $(BIN)/pytest -m statestores tests/integration

# Two operator processes, each with its own daprd, on one placement, scheduler and PostgreSQL.
# STEADFAST_REPLICA_SAGAS=50 runs it bigger; bench/replicas_bench.py measures 1, 2 and 3 replicas.
replicas: venv binaries  ## work spread over two replicas and SIGKILL of one with its daprd, on daprd+PostgreSQL
	STEADFAST_ENGINES=daprd-postgres $(BIN)/pytest -m replicas tests/integration

e2e-kind: venv  ## with Docker and kind: a kind cluster, Dapr by its chart, the image loaded, the chart and samples (tests/e2e)
	$(BIN)/pytest tests/e2e -m e2e -v

demo: venv binaries  ## local control plane + engine + operator, samples applied, statuses shown (ENGINE=daprd for daprd)
	$(BIN)/steadfast dev demo --dir $(DEV) --engine $(ENGINE)

dev-up: venv binaries  ## start the local control plane and engine; prints the exports
	@$(BIN)/steadfast dev up --dir $(DEV) --engine $(ENGINE) --user alice:approvers --user bob:approvers --user carol

dev-down: venv  ## stop what dev-up started
	$(BIN)/steadfast dev down --dir $(DEV)

clean:  ## remove the virtual environment and local state (the binary cache stays)
	-$(BIN)/steadfast dev down --dir $(DEV)
	rm -rf $(VENV) .steadfast .pytest_cache .mypy_cache .ruff_cache
