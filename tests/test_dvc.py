"""`dvc repro` on a temporary copy of the repository with the tiny configuration: the pipeline, a
no-op second repro, metrics, plots, push to the default local remote, and an experiment; each
pipeline execution one MLflow run in the copy's own ``mlflow.db`` (the default store)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from gancore.dvcstore import data_version
from helpers import REPO, venv_env, write_params

GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


# One `dvc repro` (the module fixture) serves every test here: keep them on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("dvc")


def repository_files(repo: Path) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, capture_output=True)
    if listed.returncode == 0 and listed.stdout:
        return [f for f in listed.stdout.decode().split("\0") if f]
    # Not a git checkout: everything but run outputs and caches.
    top = {
        ".git",
        ".venv",
        "runs",
        "mlflow.db",
        "mlartifacts",
        ".dvc-storage",
        "data",
        "models",
        "samples",
        "metrics",
        "checkpoints",
        "plots",
        "dvc.lock",
        ".mlflow_run.json",
        "prefect.toml",
    }
    files = [p.relative_to(repo) for p in repo.rglob("*") if p.is_file()]
    return [
        str(p)
        for p in files
        if p.parts[0] not in top
        and "__pycache__" not in p.parts
        and not any(part.endswith(".egg-info") for part in p.parts)
        and p.parts[:2] != (".dvc", "cache")
    ]


def sh(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900, stderr: bool = True) -> str:
    """Run a command that must succeed; its stdout (and stderr, unless asked not to)."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + (done.stderr if stderr else "")


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def repo(tmp_path_factory):
    """The repository copied (tracked and untracked-not-ignored files), tiny params committed, and
    one `dvc repro` run. The copy's own code runs (PYTHONPATH): it is the code DVC hashes."""
    root = tmp_path_factory.mktemp("repo")
    for rel in repository_files(REPO):
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    for stale in ("dvc.lock", "metrics", ".mlflow_run.json"):  # a fresh clone's state, whatever the checkout holds
        target = root / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    write_params(root / "params.yaml", tracking={"experiment": "gancore"})
    env = venv_env(PYTHONPATH=str(root), OMP_NUM_THREADS="1", **GIT)
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: sqlite:///<repo>/mlflow.db
    sh(["git", "init", "-q"], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-q", "-m", "tiny"], root, env)
    out = sh(["dvc", "repro"], root, env)
    return root, env, out


def runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gancore")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())


def test_repro_runs_every_stage_into_one_mlflow_run(repo):
    root, env, out = repo
    for stage in ("prepare", "train", "sample", "evaluate", "diagnose"):
        assert f"Running stage '{stage}'" in out
    (run,) = runs(root)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["orchestrator"] == "dvc"
    assert tags["pipeline.stages_run"] == "prepare,train,sample,evaluate,diagnose"
    assert tags["mlflow.source.git.commit"] == sh(["git", "rev-parse", "HEAD"], root, env, stderr=False).strip()
    # The data version MLflow records is the one DVC locked.
    prepared = next(o for o in lock(root)["stages"]["prepare"]["outs"] if o["path"] == "data/prepared")
    assert tags["dvc.prepared_md5"] == prepared["md5"] == data_version(root / "data" / "prepared")
    evaluate = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert run.data.metrics["fid"] == evaluate["fid"]
    assert "mlflow" not in (root / "dvc.lock").read_text() and "mlartifacts" not in (root / "dvc.lock").read_text()
    assert (root / "data" / "raw").is_dir()
    # Artifacts beside mlflow.db; nothing in MLflow's fallback ./mlruns.
    assert (root / "mlartifacts").is_dir() and not (root / "mlruns").exists()


def test_second_repro_does_nothing(repo):
    root, env, _ = repo
    before = len(runs(root))
    # Bytecode caches appear beside the code whenever Python imports it without
    # PYTHONDONTWRITEBYTECODE: they must not count as a change of the stages' code dependencies.
    sh([sys.executable, "-m", "compileall", "-q", "gancore"], root, env)
    assert list((root / "gancore" / "training").glob("__pycache__/*.pyc"))
    out = sh(["dvc", "repro"], root, env)
    assert "Data and pipelines are up to date." in out and "Running stage" not in out
    assert len(runs(root)) == before


def test_metrics_plots_and_push_to_the_default_local_remote(repo):
    root, env, _ = repo
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"], root, env, stderr=False))
    files = shown[""]["data"]
    evaluate = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert files["metrics/evaluate.json"]["data"]["fid"] == evaluate["fid"]
    assert "verdict" in files["metrics/diagnose.json"]["data"]

    plots = json.loads(sh(["dvc", "plots", "show", "--json"], root, env, stderr=False))["data"]
    assert {"losses", "discriminator_outputs", "mode_histogram"} <= set(plots)
    assert any(key.endswith("samples.png") for key in plots)

    sh(["dvc", "push"], root, env)
    stored = {p.name for p in (root / ".dvc-storage").rglob("*") if p.is_file()}
    models = next(o for o in lock(root)["stages"]["train"]["outs"] if o["path"] == "models")
    assert models["md5"][2:] in stored  # models/ (its .dir listing) reached the remote
    assert subprocess.run(["git", "check-ignore", "-q", ".dvc-storage"], cwd=root).returncode == 0


def test_experiment_reruns_what_changed_as_a_new_run(repo):
    root, env, _ = repo
    before = len(runs(root))
    out = sh(["dvc", "exp", "run", "-S", "loss.name=hinge", "-S", "train.steps=30"], root, env)
    assert "Running stage 'train'" in out and "Running stage 'prepare'" not in out
    new = runs(root)[before:]
    assert len(new) == 1
    run = new[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.name"] == "hinge" and run.data.params["train.steps"] == "30"
    assert run.data.tags["pipeline.stages_run"] == "train,sample,evaluate,diagnose"
    assert run.data.tags["pipeline.stages_reused"] == "prepare"
    assert run.data.tags["dvc.prepared_md5"] == runs(root)[0].data.tags["dvc.prepared_md5"]
    diff = json.loads(sh(["dvc", "metrics", "diff", "--json"], root, env, stderr=False))
    assert "fid" in diff.get("metrics/evaluate.json", {})
