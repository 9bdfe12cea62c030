"""The fault scenarios and their table, split from the workspace/process helpers they share and from main."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from faults_workspace import (
    BIN,
    CHECKPOINT_EVERY,
    STEPS,
    TINY,
    Outcome,
    Workspace,
    copy_repository,
    environment,
    flow,
    gan,
    killed,
    loadable,
    same_state,
    same_training,
    write_params,
)


# -- scenarios ---------------------------------------------------------------------------------------
def kill_train(ws: Workspace, where: str, rng: random.Random) -> Outcome:
    """SIGKILL ``gan train`` at a random step before the first checkpoint, between two, during a
    checkpoint write, or from outside at a random moment; rerun; compare with the reference."""
    root = ws.fresh(f"kill-train-{where}")
    off = ["-S", "tracking.enabled=false"]
    if where == "outside":
        proc = subprocess.Popen(
            [str(BIN / "gan"), "train", "--params", str(root / "params.yaml"), "--out", str(root), *off],
            cwd=root,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Into the loop (the log appears once training runs), then a random moment of it.
        deadline = time.monotonic() + 120
        while not (root / "metrics/train_log.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first = proc
        note = "killed from outside"
    else:
        if where == "before-checkpoint":
            fault, note = f"train.step@{rng.randint(1, CHECKPOINT_EVERY - 1)}=kill", ""
        elif where == "between-checkpoints":
            fault, note = f"train.step@{rng.randint(CHECKPOINT_EVERY + 1, 2 * CHECKPOINT_EVERY - 1)}=kill", ""
        else:
            fault, note = "write:last.pt@2=kill", "second checkpoint write"
        first = gan("train", root, *off, faults=fault)
        note = note or fault
    ckpt = root / "checkpoints/last.pt"
    data_lost = ckpt.exists() and not loadable(ckpt)
    second = gan("train", root, *off)
    survived = killed(first) and second.returncode == 0
    return Outcome(
        survived,
        survived and same_training(root, ws.reference),
        data_lost,
        f"{note}; first run {'SIGKILLed' if killed(first) else f'exit {first.returncode}'}",
    )


def disk_full_result(ws: Workspace, rng: random.Random) -> Outcome:
    """An injected ENOSPC while evaluate.json is rewritten: exit 1 naming it, the old one intact."""
    root = ws.fresh("disk-full-result")
    shutil.copytree(ws.reference / "models", root / "models")
    off = ["-S", "tracking.enabled=false"]
    for stage in ("sample", "evaluate"):
        gan(stage, root, *off)
    before = (root / "metrics/evaluate.json").read_bytes()
    failed = gan("evaluate", root, *off, faults="write:evaluate.json=enospc")
    intact = (root / "metrics/evaluate.json").read_bytes() == before and json.loads(before)
    named = failed.returncode == 1 and str(root / "metrics/evaluate.json") in failed.stderr and "No space left" in failed.stderr
    leftovers = list((root / "metrics").glob(".*.tmp"))
    again = gan("evaluate", root, *off)
    return Outcome(
        named and again.returncode == 0,
        (root / "metrics/evaluate.json").read_bytes() == before,
        not intact or bool(leftovers),
        failed.stderr.strip().splitlines()[-1][:160] if failed.stderr else "",
    )


def _tmpfs_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def disk_full_checkpoint(ws: Workspace, rng: random.Random) -> Outcome:
    """A checkpoint write on a full disk: a real tmpfs sized for one checkpoint and a half (an atomic
    write needs the old and the new file at once), else the injected OSError."""
    root = ws.fresh("disk-full-checkpoint")
    off = ["-S", "tracking.enabled=false"]
    if _tmpfs_available():
        ckpt_size = (ws.reference / "checkpoints/last.pt").stat().st_size
        data_size = sum(p.stat().st_size for p in (root / "data").rglob("*") if p.is_file())
        # Room for the data, the log and one checkpoint, and half a second one: the second
        # checkpoint's temporary file fills the disk (no progress pictures, to keep the sum exact).
        size = data_size + int(1.5 * ckpt_size) + (1 << 16)
        off = [*off, "-S", "train.monitor_every=null"]
        mnt = root / "tmpfs"
        mnt.mkdir()
        script = (
            f"mount -t tmpfs -o size={size} tmpfs {mnt} && cp -r {root}/data {root}/params.yaml {mnt}/ && "
            f"{BIN}/gan train --params {mnt}/params.yaml --out {mnt} {' '.join(off)}; echo rc=$?; "
            f"{sys.executable} -c \"import torch; print('step', torch.load('{mnt}/checkpoints/last.pt', weights_only=True)['step'])\""
        )
        done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=environment(), capture_output=True, text=True, timeout=600)
        out = done.stdout + done.stderr
        named = "rc=1" in out and f"{mnt}/checkpoints/last.pt" in out and "No space left" in out
        kept = f"step {CHECKPOINT_EVERY}" in done.stdout
        return Outcome(
            named and kept, kept, not kept, "real tmpfs: " + (next((line for line in out.splitlines() if "No space" in line), "")[:120])
        )
    failed = gan("train", root, *off, faults="write:last.pt@2=enospc")
    ckpt = root / "checkpoints/last.pt"
    kept = loadable(ckpt) and torch.load(ckpt, weights_only=True)["step"] == CHECKPOINT_EVERY
    named = failed.returncode == 1 and str(ckpt) in failed.stderr and "No space left" in failed.stderr
    again = gan("train", root, *off)
    return Outcome(
        named and again.returncode == 0,
        again.returncode == 0 and same_training(root, ws.reference),
        not kept,
        "injected OSError (no tmpfs here)",
    )


def _client(root: Path) -> Any:
    """The project's own store, its model registry included: without ``registry_uri``, an
    ``mlflow.set_registry_uri()`` earlier in this process (any in-process flow, e.g. in the test
    suite) would receive the registry calls instead."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs(root: Path) -> list[Any]:
    c = _client(root)
    exp = c.get_experiment_by_name(TINY["tracking"]["experiment"])
    return [] if exp is None else c.search_runs([exp.experiment_id])


def kill_flow(ws: Workspace, rng: random.Random, env: dict[str, str]) -> Outcome:
    """SIGKILL the in-process flow while it trains; rerun with the same --out: training resumes from
    the checkpoint, the result equals the reference, and the killed run's MLflow run is KILLED."""
    root = ws.fresh("kill-flow")
    out = root / "out"
    step = rng.randint(CHECKPOINT_EVERY + 1, STEPS - 1)
    first = flow(root, out, env={**env, "GANCORE_FAULTS": f"train.step@{step}=kill"})
    second = flow(root, out, env=env)
    runs = {r.info.status: r for r in _runs(root)}
    checkpoint = step // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    resumed = "FINISHED" in runs and runs["FINISHED"].data.tags.get("train.resumed_from") == str(checkpoint)
    identical = second.returncode == 0 and same_training(out, ws.reference)
    statuses = sorted(r.info.status for r in _runs(root))
    ok = killed(first) and second.returncode == 0 and statuses == ["FINISHED", "KILLED"] and resumed
    return Outcome(
        ok, identical, False, f"killed at step {step}; MLflow runs {statuses}" + ("" if second.returncode == 0 else second.stderr[-300:])
    )


def transient_in_task(ws: Workspace, rng: random.Random, env: dict[str, str]) -> Outcome:
    """A transient OSError in the train task: Prefect's retry resumes from the checkpoint."""
    root = ws.fresh("transient")
    out = root / "out"
    step = rng.randint(CHECKPOINT_EVERY + 1, STEPS - 1)
    done = flow(root, out, env={**env, "GANCORE_FAULTS": f"train.step@{step}=raise"})
    retried = "injected transient fault" in done.stdout + done.stderr
    return Outcome(
        done.returncode == 0 and retried,
        done.returncode == 0 and same_training(out, ws.reference),
        False,
        f"raised at step {step}" + ("" if done.returncode == 0 else done.stderr[-300:]),
    )


def concurrent_flows(ws: Workspace, rng: random.Random, env: dict[str, str], n: int = 3) -> Outcome:
    """``n`` flows at once in one project: one SQLite MLflow store, one DVC cache, one Prefect cache."""
    root = ws.fresh("concurrent")
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    shutil.rmtree(root / "data")  # every flow prepares (or finds the cached preparation)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gancore_flows.pipeline", "--params", str(root / "params.yaml")],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(n)
    ]
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    codes = [p.returncode for p in procs]
    runs = _runs(root)
    c = _client(root)
    versions = c.search_model_versions("name='gancore-ring8-mlp'")
    dirs = [d for d in (root / "runs").iterdir() if d.is_dir() and not d.name.startswith(".")]
    complete = all(
        (d / f).is_file()
        for d in dirs
        for f in ("models/generator.pt", "samples/samples.pt", "metrics/evaluate.json", "metrics/diagnose.json")
    )
    finished = sum(r.info.status == "FINISHED" for r in runs)
    locked = [o for o in outputs if "database is locked" in o]
    ok = codes == [0] * n and finished == n and len(versions) == n and len(dirs) == n and complete and not locked
    note = f"exit codes {codes}, {finished} FINISHED runs, {len(versions)} model versions, {len(dirs)} run dirs"
    if not ok:
        note += "; " + " | ".join(o[-400:] for o, code in zip(outputs, codes) if code)
    return Outcome(ok, ok, not complete, note)


def kill_dvc_repro(ws: Workspace, rng: random.Random) -> Outcome:
    """SIGKILL ``dvc repro`` (the whole process group) in its train stage; the next repro completes,
    with no stale lock and every output in place."""
    root = ws.base / "dvc-repo"
    if not root.exists():
        copy_repository(root)
        # The fault is DVC's: its lock and its outputs. Nothing here reads MLflow (the DVC tests
        # do), and tracking would add an MLflow start-up to each of the nine stage processes.
        write_params(root, tracking={"enabled": False})
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    env = environment(
        PYTHONPATH=str(root),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.org",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.org",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 600
    log = root / "metrics/train_log.csv"
    while time.monotonic() < deadline and proc.poll() is None and not (log.exists() and log.read_text().count("\n") > 2):
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    outputs = all(
        (root / f).is_file() for f in ("models/generator.pt", "samples/samples.pt", "metrics/evaluate.json", "metrics/diagnose.json")
    )
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    ok = killed(proc) and again.returncode == 0 and outputs and "up to date" in status.stdout
    identical = ok and same_state(root / "models/generator.pt", ws.reference / "models/generator.pt")
    return Outcome(
        ok,
        identical,
        not outputs,
        "next repro: " + (again.stdout + again.stderr).strip().splitlines()[-1][:120] if again.stdout + again.stderr else "",
    )


SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "SIGKILL gan train before the first checkpoint": lambda ws, rng, env: kill_train(ws, "before-checkpoint", rng),
    "SIGKILL gan train between checkpoints": lambda ws, rng, env: kill_train(ws, "between-checkpoints", rng),
    "SIGKILL gan train during a checkpoint write": lambda ws, rng, env: kill_train(ws, "checkpoint-write", rng),
    "SIGKILL gan train from outside, random moment": lambda ws, rng, env: kill_train(ws, "outside", rng),
    "SIGKILL the in-process flow while training": kill_flow,
    "transient error in the train task (retry)": transient_in_task,
    "disk full writing a checkpoint": lambda ws, rng, env: disk_full_checkpoint(ws, rng),
    "disk full writing a result": lambda ws, rng, env: disk_full_result(ws, rng),
    "SIGKILL dvc repro in the train stage": lambda ws, rng, env: kill_dvc_repro(ws, rng),
    "3 concurrent flows in one project": concurrent_flows,
}
RANDOM_POINTS = {name for name in SCENARIOS if "SIGKILL" in name or "transient" in name}
