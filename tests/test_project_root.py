"""One project root for every entry point: the DVC repository holding the params file, wherever
in it the file sits (issue: the README's `--params examples/params/...` wrote its MLflow store to
examples/params/)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import yaml

from gancore.layout import find_project_root
from helpers import PARAMS, TINY, deep_merge, venv_env


def _project(tmp_path):
    root = tmp_path / "project"
    (root / "examples" / "params").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, env=venv_env(), check=True)
    tree = deep_merge(yaml.safe_load(PARAMS.read_text()), TINY)
    (root / "examples" / "params" / "tiny.yaml").write_text(yaml.safe_dump(tree))
    return root


def test_the_root_is_the_repository_around_the_params_file(tmp_path, monkeypatch):
    root = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(elsewhere)
    assert find_project_root(root / "examples" / "params" / "tiny.yaml") == root.resolve()
    # A params file outside any repository: the repository around the working directory.
    monkeypatch.chdir(root / "examples")
    assert find_project_root(elsewhere / "p.yaml") == root.resolve()
    monkeypatch.chdir(elsewhere)
    assert find_project_root() == elsewhere.resolve()
    monkeypatch.setenv("DVC_ROOT", str(elsewhere))
    assert find_project_root(root / "examples" / "params" / "tiny.yaml") == elsewhere.resolve()


def test_a_params_file_in_a_subfolder_records_its_run_in_the_root_store(tmp_path):
    root = _project(tmp_path)
    env = venv_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, as for a user
    env.pop("DVC_ROOT", None)
    done = subprocess.run(
        ["gan", "prepare", "--params", "examples/params/tiny.yaml", "--out", "runs/example"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (root / "mlflow.db").is_file() and not (root / "examples" / "params" / "mlflow.db").exists()
    with sqlite3.connect(root / "mlflow.db") as db:
        runs = db.execute("select status from runs").fetchall()
    assert len(runs) == 1
    assert not any(name.startswith(("mlflow", "runs", "mlartifacts")) for name in os.listdir(root / "examples" / "params"))
