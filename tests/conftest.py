"""Shared fixtures: a quiet, offline environment; one thread per process; one Prefect test harness;
one prepared data set per kind, shared by the modules that need it.

Environment (whole session): telemetry of Prefect, MLflow and DVC off; no progress bars; raw data
from ``../shared/datasets`` when that folder exists; MLflow runs go to a session-scoped SQLite store
(``$MLFLOW_TRACKING_URI``), never to the repository's ``mlflow.db``; Prefect keeps its files in a
temporary ``$PREFECT_HOME``; the classifier cache in a temporary folder. Prefect reads its settings
when first imported (test modules import it at collection), so those variables are set when this
module is loaded, before collection.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gancore.environment import quiet
from helpers import SHARED_DATASETS, venv_env, write_params

quiet()
os.environ["GANCORE_PROGRESS"] = "0"
# Small models on two shared cores: intra-op threads only spin against each other. Set, not
# defaulted: the session runs torch on one thread, and code that takes its count from the
# variable (benchmark workers) must agree with it (_threads_kept).
os.environ["OMP_NUM_THREADS"] = "1"
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="gancore-tests-"))
# Every process that loads this module makes one, pytest-xdist's controller too, which runs no
# test and so no session fixture: each removes its own on exit.
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)
os.environ.setdefault("PREFECT_HOME", str(_SESSION_DIR / "prefect-home"))
os.environ.setdefault("GANCORE_CACHE_DIR", str(_SESSION_DIR / "cache"))
# An unreachable server configured in a profile or prefect.toml must not capture the tests' flows.
os.environ.pop("PREFECT_API_URL", None)
if "GANCORE_DATASETS_DIR" not in os.environ and SHARED_DATASETS.is_dir():
    os.environ["GANCORE_DATASETS_DIR"] = str(SHARED_DATASETS)
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"


@pytest.fixture(scope="session", autouse=True)
def _session():
    """One torch thread for the whole session; the session's temporary folder removed at the end."""
    import torch

    torch.set_num_threads(1)
    yield
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _threads_kept():
    """A test that leaves torch's thread count changed fails by name: the count is process-wide
    and part of what training records (``gancore.device.software``), so a leak fails a later,
    unrelated test in the same worker, and only in some orders."""
    import torch

    yield
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
        pytest.fail(f"the test left torch on {threads} intra-op threads (the session runs on 1): restore what it set")


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


def pytest_collection_modifyitems(config, items):
    """Every test on the Prefect test harness goes to one pytest-xdist worker: a harness is a
    server process per worker (about 15 s of CPU to start, and its services poll for the rest of
    the session), and one serves them all. pytest-xdist reads the mark after this hook."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if "prefect_harness" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("prefect-harness"))
