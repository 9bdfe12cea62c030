# Entry points: `make run` (the default pipeline), `make test` (the test suite).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

# Offline copies of the raw data sets, when the shared folder sits beside the repository.
SHARED_DATASETS := $(abspath ../shared/datasets)
ifneq ($(wildcard $(SHARED_DATASETS)/README.md),)
export GANCORE_DATASETS_DIR ?= $(SHARED_DATASETS)
endif

# Telemetry off for everything started from here.
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: run repro sweep serve ui test install install-dev bench clean

MLFLOW_PORT ?= 5000

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml examples/gancore-example-plugin/pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dev]'
	# The example third-party plugin, installed the way a user would (it depends on gancore).
	$(PY) -m pip install -q -e examples/gancore-example-plugin
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The default pipeline through the gan-pipeline Prefect flow, in this process (no server needed).
# Parameters as for `gan`: make run ARGS='-S model.arch=dcgan -S data.name=mnist'
run: $(VENV)/.installed
	$(PY) -m flows.pipeline $(ARGS)

# The same pipeline through DVC (dvc.yaml); the stage commands need `gan` on PATH.
repro: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# gan-sweep in this process: make sweep ARGS='--loss hinge --loss wasserstein_gp --seed 0 --seed 1'
sweep: $(VENV)/.installed
	$(PY) -m flows.sweep $(ARGS)

# A local Prefect server (SQLite, 127.0.0.1, analytics off) serving gan-pipeline/default and
# gan-sweep/default. Then: prefect deployment run 'gan-pipeline/default' --watch
serve: $(VENV)/.installed
	$(PY) -m flows.serve $(ARGS)

# The MLflow UI over every run at http://127.0.0.1:$(MLFLOW_PORT)
ui: $(VENV)/.installed
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf data/prepared models samples metrics checkpoints plots runs .mlflow_run.json
