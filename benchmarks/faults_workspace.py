"""The fault suite's tiny project and process helpers (run ``gan``/flows, compare results), split from the scenarios and main."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
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


def copy_repository(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True)
    for rel in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / rel).is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target / rel)
    for stale in ("dvc.lock", "metrics", ".mlflow_run.json"):
        path = target / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
