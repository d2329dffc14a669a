# Everything a newcomer or CI needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEV    ?= .steadfast/dev

.PHONY: help venv binaries lint typecheck crds crds-check test unit integration demo dev-up dev-down clean e2e-kind

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed  ## create the virtual environment with pinned dependencies

binaries: venv  ## build (or reuse) etcd, kube-apiserver, kube-controller-manager, kubectl, helm from the Go module proxy
	$(BIN)/steadfast dev build etcd kube-apiserver kube-controller-manager kubectl helm

lint: venv  ## ruff and strict mypy
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

crds: venv  ## regenerate crds/ from the API models
	$(BIN)/steadfast crds
	cp crds/*.yaml charts/steadfast/files/crds/  # the chart ships the same files

crds-check: venv
	$(BIN)/steadfast crds --check

unit: venv  ## tests that need no servers
	$(BIN)/pytest tests/unit

test: venv binaries lint  ## the full suite: lint, unit, engine and integration tests on a real control plane
	$(BIN)/pytest

e2e-kind: venv  ## with Docker and kind: a kind cluster, Dapr by its chart, the image loaded, the chart and samples (tests/e2e)
	$(BIN)/pytest tests/e2e -m e2e -v

demo: venv binaries  ## local control plane + engine + operator, sample resources applied, statuses shown
	$(BIN)/steadfast dev demo --dir $(DEV)

dev-up: venv binaries  ## start the local control plane and engine; prints the exports
	@$(BIN)/steadfast dev up --dir $(DEV) --user alice:approvers --user bob:approvers --user carol

dev-down: venv  ## stop what dev-up started
	$(BIN)/steadfast dev down --dir $(DEV)

clean:  ## remove the virtual environment and local state (the binary cache stays)
	-$(BIN)/steadfast dev down --dir $(DEV)
	rm -rf $(VENV) .steadfast .pytest_cache .mypy_cache .ruff_cache
