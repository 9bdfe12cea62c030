# Entry points: `make run` (the default pipeline), `make test` (the test suite).
# Every command below goes through a Python entry point of the project (`gan`, the flows' mains),
# which turns the telemetry of Prefect, MLflow and DVC off (gancore/environment.py).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

# Offline copies of the raw data sets, when the shared folder sits beside the repository.
SHARED_DATASETS := $(abspath ../shared/datasets)
ifneq ($(wildcard $(SHARED_DATASETS)/README.md),)
export GANCORE_DATASETS_DIR ?= $(SHARED_DATASETS)
endif

.PHONY: run repro sweep mixture remedy serve worker ui tracking-server test lint install install-dev lock chromium bench clean

MLFLOW_PORT ?= 5000
# pytest-xdist workers for `make test` (2: one per core of the CI machine)
TEST_WORKERS ?= 2

# The versions every install here takes (`make lock` writes them from the venv): the same commit
# and seed train the same bits only on the same torch, numpy and kernels (gancore/device.py),
# and a release published tomorrow does not change what CI installs. Without the file, or with
# CONSTRAINTS= on a new venv, pip takes the newest versions pyproject.toml allows.
CONSTRAINTS ?= constraints.txt
LOCKED := $(wildcard $(CONSTRAINTS))
PIP_CONSTRAINTS := $(if $(LOCKED),-c $(LOCKED))
ifneq ($(CONSTRAINTS),)
ifeq ($(LOCKED),)
$(warning $(CONSTRAINTS) not found: installing the newest versions pyproject.toml allows)
endif
endif

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml $(LOCKED) | $(VENV)/bin/python
	$(PY) -m pip install -q $(PIP_CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml examples/gancore-example-plugin/pyproject.toml $(LOCKED) | $(VENV)/bin/python
	$(PY) -m pip install -q $(PIP_CONSTRAINTS) -e '.[dev]'
	# The example third-party plugin, installed the way a user would (it depends on gancore).
	$(PY) -m pip install -q $(PIP_CONSTRAINTS) -e examples/gancore-example-plugin
	touch $(VENV)/.installed $@

# Pin what the dev venv holds now. To move to newer releases: rm -rf .venv, then
# `make install-dev CONSTRAINTS=`, `make test`, and `make lock` once the tests pass.
lock: $(VENV)/.installed-dev
	{ echo "# Written by 'make lock': pip freeze of the dev venv, editables left out."; \
	  $(PY) -m pip freeze --exclude-editable; } > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt

# The browser tests drive Debian's Chromium through Playwright (Playwright's own browser download
# is unreachable here): installed with apt when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev chromium

# The default pipeline through the gan-pipeline Prefect flow, in this process (no server needed).
# Parameters as for `gan`: make run ARGS='-S model.arch=dcgan -S data.name=mnist'
run: $(VENV)/.installed
	$(PY) -m gancore_flows.pipeline $(ARGS)

# The same pipeline through DVC (dvc.yaml); the stage commands need `gan` on PATH.
repro: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# gan-sweep in this process: make sweep ARGS='--loss hinge --loss wasserstein_gp --seed 0 --seed 1 [--runner dask]'
sweep: $(VENV)/.installed
	$(PY) -m gancore_flows.sweep $(ARGS)

# A mixture of GANs, one per part of the data, trained in parallel: make mixture ARGS='-S data.name=grid25 -S mixture.parts=25'
mixture: $(VENV)/.installed
	$(PY) -m gancore_flows.mixture $(ARGS)

# gan-pipeline, then the remedies its diagnosis names, compared: make remedy ARGS='-S data.name=grid25'
remedy: $(VENV)/.installed
	$(PY) -m gancore_flows.remedy $(ARGS)

# A local Prefect server (SQLite, 127.0.0.1, analytics off) serving the deployments of every flow.
# Then: prefect deployment run 'gan-pipeline/default' --watch
serve: $(VENV)/.installed
	$(PY) -m gancore_flows.serve $(ARGS)

# A process work pool with the deployments and a worker, against the local server (started if none answers).
worker: $(VENV)/.installed
	$(PY) -m gancore_flows.worker $(ARGS)

# The MLflow UI over every run at http://127.0.0.1:$(MLFLOW_PORT)
ui: $(VENV)/.installed
	$(BIN)/gan ui --port $(MLFLOW_PORT)

# A shared MLflow tracking server (SQLite + artifact root, 127.0.0.1); point runs at it with the printed MLFLOW_TRACKING_URI.
tracking-server: $(VENV)/.installed
	$(BIN)/gan tracking-server $(ARGS)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: $(VENV)/.installed-dev chromium
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

bench: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf data/prepared models samples metrics checkpoints plots runs .mlflow_run.json
