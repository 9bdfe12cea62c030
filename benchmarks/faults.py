"""Fault injection: does the pipeline survive real failures without losing or changing results?

Every scenario uses real processes and real signals: ``gan train`` and the in-process flow are
SIGKILLed (at a step or during a checkpoint write through ``$GANCORE_FAULTS``, or by this process
at a random moment), ``dvc repro`` is SIGKILLed in its train stage, a full disk is a real small
tmpfs where the machine allows mounting one (else the ``OSError`` is injected), and four flows run
at once in one project. After each fault the run is repeated and compared with an uninterrupted
one, bit for bit (CPU).

    python benchmarks/faults.py            # 3 trials of each random kill point
    python benchmarks/faults.py --tiny     # one trial each (CI)

Prints one row per fault: fault | trials | survived | results identical | data lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS, CHECKPOINT_EVERY = 120, 40
TINY = {
    "device": "cpu",
    "data": {"name": "ring8", "n_train": 2000, "n_test": 1000},
    "model": {"options": {"hidden": 32}},
    "train": {"steps": STEPS, "batch_size": 128, "checkpoint_every": CHECKPOINT_EVERY, "log_every": 10, "monitor_every": 40},
    "sample": {"n": 500},
    "evaluate": {"max_real": 1000},
    "diagnose": {"ndb_bins": 20},
    # The faults hit one GAN's checkpoints; the mixture's parts reuse the same training loop.
    "mixture": {"enabled": False},
    "tracking": {"enabled": True, "experiment": "gancore-faults"},
}


@dataclass
class Outcome:
    survived: bool
    identical: bool
    data_lost: bool
    note: str = ""


@dataclass
class Row:
    fault: str
    outcomes: list[Outcome] = field(default_factory=list)

    def cells(self) -> list[str]:
        n = len(self.outcomes)
        return [
            self.fault,
            str(n),
            f"{sum(o.survived for o in self.outcomes)}/{n}",
            f"{sum(o.identical for o in self.outcomes)}/{n}",
            f"{sum(o.data_lost for o in self.outcomes)}/{n}",
        ]


# -- plumbing ---------------------------------------------------------------------------------------
def environment(**extra: str) -> dict[str, str]:
    from gancore.environment import quiet

    env = dict(quiet({**os.environ, "OMP_NUM_THREADS": "1", "GANCORE_PROGRESS": "0", **extra}))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("GANCORE_FAULTS", None)
    env.update({k: v for k, v in extra.items() if k == "GANCORE_FAULTS"})
    return env


def write_params(root: Path, **sections: dict[str, Any]) -> Path:
    def merge(a: dict, b: dict) -> dict:
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v for k, v in b.items()}}

    path = root / "params.yaml"
    tree = merge(merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY), sections)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def gan(
    stage: str, root: Path, *args: str, faults: str | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    extra = {"GANCORE_FAULTS": faults} if faults else {}
    return subprocess.run(
        [str(BIN / "gan"), stage, "--params", str(root / "params.yaml"), "--out", str(root), *args],
        cwd=root,
        env=env or environment(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def killed(proc: subprocess.CompletedProcess | subprocess.Popen) -> bool:
    return proc.returncode == -signal.SIGKILL


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def same_state(a: Path, b: Path) -> bool:
    sa, sb = state(a), state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def log_rows(path: Path) -> list[dict[str, Any]]:
    from gancore import trainlog

    return [{k: v for k, v in row.items() if k != "seconds"} for row in trainlog.read(path)]


def loadable(path: Path) -> bool:
    """A file gancore wrote that is still whole (a checkpoint or model loads)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:
        return False


def same_training(layout_root: Path, reference: Path) -> bool:
    models = ("models/generator.pt", "models/discriminator.pt")
    return all(same_state(layout_root / m, reference / m) for m in models) and log_rows(layout_root / "metrics/train_log.csv") == log_rows(
        reference / "metrics/train_log.csv"
    )


class Workspace:
    """A project with tiny parameters, prepared data and an uninterrupted reference training."""

    def __init__(self, base: Path):
        self.base = base
        self.reference = base / "reference"
        self.reference.mkdir(parents=True)
        write_params(self.reference)
        for stage in ("prepare", "train"):
            done = gan(stage, self.reference, "-S", "tracking.enabled=false")
            if done.returncode:
                raise RuntimeError(f"reference gan {stage} failed:\n{done.stderr[-3000:]}")
        self._count = 0

    def fresh(self, name: str) -> Path:
        """A new output root holding the reference's prepared data and parameters."""
        self._count += 1
        root = self.base / f"{self._count:02d}-{name}"
        shutil.copytree(self.reference / "data", root / "data")
        shutil.copy2(self.reference / "params.yaml", root / "params.yaml")
        return root


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


def flow(
    root: Path, out: Path, faults: str | None = None, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    extra = {"GANCORE_FAULTS": faults} if faults else {}
    return subprocess.run(
        [sys.executable, "-m", "gancore_flows.pipeline", "--params", str(root / "params.yaml"), "--out", str(out)],
        cwd=root,
        env=env or environment(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
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


def copy_repository(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True)
    for rel in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / rel).is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target / rel)
    for stale in ("dvc.lock", "metrics", ".mlflow_run.json"):
        path = target / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="one trial of each fault (CI)")
    parser.add_argument("--trials", type=int, default=3, help="trials of each randomly placed fault (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", action="append", default=None, help="run only faults whose name contains this")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gancore-faults-") as tmp:
        base = Path(tmp)
        # One Prefect home for the flows, warmed by the first; flows start their own local API.
        env = environment(PREFECT_HOME=str(base / "prefect-home"))
        env.pop("PREFECT_API_URL", None)
        env.pop("MLFLOW_TRACKING_URI", None)  # each project's own mlflow.db, as for a user
        ws = Workspace(base)
        for name, scenario in SCENARIOS.items():
            if args.only and not any(o in name for o in args.only):
                continue
            trials = 1 if args.tiny or name not in RANDOM_POINTS else args.trials
            row = Row(name)
            for _ in range(trials):
                started = time.perf_counter()
                outcome = scenario(ws, rng, env)
                outcome.note += f" ({time.perf_counter() - started:.0f} s)"
                row.outcomes.append(outcome)
                print(
                    f"  {name}: survived={outcome.survived} identical={outcome.identical} lost={outcome.data_lost} - {outcome.note}",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append(row)
    from gancore.report import text_table

    print(text_table(["fault", "trials", "survived", "results identical", "data lost"], [r.cells() for r in rows]))
    bad = [r.fault for r in rows if any(not o.survived or not o.identical or o.data_lost for o in r.outcomes)]
    if bad:
        print(f"\nnot survived cleanly: {'; '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
