"""The fault suite (benchmarks/faults.py) in CI: every fault is survived, with results identical to
an uninterrupted run and no data lost. One trial per fault; the benchmark runs more."""

from __future__ import annotations

import importlib.util
import random
import sys

import pytest

from helpers import REPO, venv_env

spec = importlib.util.spec_from_file_location("faults_benchmark", REPO / "benchmarks" / "faults.py")
faults = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = faults  # dataclasses look their module up there
spec.loader.exec_module(faults)


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def workspace(tmp_path_factory):
    return faults.Workspace(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def flow_env(tmp_path_factory):
    """The flows' environment: one Prefect home of their own, started cold by the first flow."""
    env = venv_env(PREFECT_HOME=str(tmp_path_factory.mktemp("prefect-home")))
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own mlflow.db, as for a user
    return env


@pytest.mark.parametrize("name", list(faults.SCENARIOS))
def test_fault_is_survived_without_changing_or_losing_results(name, workspace, flow_env):
    outcome = faults.SCENARIOS[name](workspace, random.Random(name), flow_env)
    print(f"{name}: {outcome}")
    assert outcome.survived, outcome.note
    assert outcome.identical, outcome.note
    assert not outcome.data_lost, outcome.note


def test_benchmark_prints_the_fault_table(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        # The cheapest scenario (the workspace and two `gan train`): this test is about the script and its table.
        [sys.executable, str(REPO / "benchmarks" / "faults.py"), "--tiny", "--only", "before the first checkpoint"],
        cwd=REPO,
        env=venv_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["fault", "trials", "survived", "results", "identical", "data", "lost"]
    row = next(line for line in lines if line.startswith("SIGKILL gan train before the first checkpoint"))
    assert row.split()[-4:] == ["1", "1/1", "1/1", "0/1"]
