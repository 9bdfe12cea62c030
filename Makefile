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

.PHONY: run test install install-dev bench clean

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

run: $(VENV)/.installed
	$(BIN)/gan prepare
	$(BIN)/gan train
	$(BIN)/gan sample

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf data/prepared models samples metrics checkpoints plots
