"""Shared test fixtures: a quiet, offline environment; one Prefect test harness; tiny parameters.

Environment (whole session): telemetry of Prefect, MLflow and DVC off; no progress bars; raw data
from ``../shared/datasets`` when that folder exists; MLflow runs go to a session-scoped SQLite store
(``$MLFLOW_TRACKING_URI``), never to the repository's ``mlflow.db``; Prefect keeps its files in a
temporary ``$PREFECT_HOME``. Prefect reads its settings when first imported (test modules import
it at collection), so those variables are set when this module is loaded, before collection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

QUIET = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GANCORE_PROGRESS": "0",
}
os.environ.update(QUIET)
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="gancore-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_DIR / "prefect-home"))
# An unreachable server configured in a profile or prefect.toml must not capture the tests' flows.
os.environ.pop("PREFECT_API_URL", None)

# The tiny configuration every orchestration test runs (ring8 + mlp: seconds on a CPU).
TINY = {
    "data": {"name": "ring8", "n_train": 2000, "n_test": 1000},
    "train": {"steps": 50, "batch_size": 128, "checkpoint_every": 25, "log_every": 5},
    "sample": {"n": 500},
    "evaluate": {"max_real": 1000},
    "diagnose": {"ndb_bins": 20},
    "tracking": {"enabled": True, "experiment": "gancore-tests"},
}


@pytest.fixture(scope="session", autouse=True)
def _environment():
    """Session environment (see the module doc); restores nothing: the session owns the process."""
    os.environ.update(QUIET)
    if "GANCORE_DATASETS_DIR" not in os.environ and SHARED_DATASETS.is_dir():
        os.environ["GANCORE_DATASETS_DIR"] = str(SHARED_DATASETS)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"
    yield
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_params(path: Path, **sections) -> Path:
    """params.yaml of the repository with the tiny configuration (and ``sections``) merged in."""
    tree = deep_merge(deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY), sections)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's scripts (gan, dvc, prefect) first on PATH."""
    env = {**os.environ, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A project directory for flows: tiny params.yaml and an (SCM-less) DVC repository, so that
    prepared data are versioned in its DVC cache as in the real repository."""
    root = tmp_path_factory.mktemp("project")
    write_params(root / "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, env=venv_env(), check=True)
    return root


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (a temporary API server and database) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
