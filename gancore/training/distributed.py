"""Multi-device training: ``gan train`` under ``torchrun`` (or ``train.devices: N``, which launches it).

Each of the N processes (ranks) holds a replica of G and D wrapped in
``DistributedDataParallel``, over NCCL on GPUs (one GPU per rank) or gloo on CPUs. A step still
consumes ``train.batch_size`` samples: every rank draws the same seeded batch order and latent
vectors and takes its own ``1/N`` share, so the averaged gradients are those of the whole batch
and the run follows the single-process one (up to the order of floating-point sums; batch-norm
statistics are per rank, synchronised with ``SyncBatchNorm`` on GPUs). Logged figures are averaged
over the ranks. Rank 0 alone writes checkpoints, the log, models and pictures; a checkpoint
resumes at the same world size (it is part of the run's identity).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from gancore.config import Params
    from gancore.layout import Layout

SUMMARY_ENV = "GANCORE_TRAIN_SUMMARY"


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def from_env() -> World:
    """The world torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or a single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group; the device this rank trains on (``cuda:<local rank>`` on GPUs)."""
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def mean(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged over the ranks (in place of every rank's own)."""
    import torch.distributed as dist

    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


def check_agreement(*modules: torch.nn.Module) -> None:
    """Fail loudly if the replicas' weights differ (they must stay identical under DDP)."""
    import torch.distributed as dist

    from gancore.errors import TrainingError

    with torch.no_grad():
        local = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for m in modules for p in m.parameters()]).cpu()
    everyone = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, local)
    if not all(torch.equal(everyone[0], other) for other in everyone[1:]):
        raise TrainingError("the distributed replicas' weights diverged; this is a bug in the distributed setup, not in the run")


def first_bad(bad: tuple[int, float, float] | None) -> tuple[int, float, float] | None:
    """The earliest non-finite step over the ranks (every rank gets the same answer, so all stop)."""
    import torch.distributed as dist

    local = torch.tensor([float(bad[0]) if bad else float("inf"), *(bad[1:] if bad else (0.0, 0.0))], dtype=torch.float64)
    everyone = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, local)
    first = min(everyone, key=lambda t: float(t[0]))
    return None if first[0] == float("inf") else (int(first[0]), float(first[1]), float(first[2]))


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank (a decision only rank 0 can take, e.g. the monitor's)."""
    import torch.distributed as dist

    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def launch(params: Params, layout: Layout, restart: bool) -> dict[str, Any]:
    """``train.devices: N`` in a single process: run ``gan train`` on N ranks with torchrun and
    return rank 0's summary (this process's tracker records the stage, the ranks do not)."""
    import yaml

    from gancore.errors import TrainingError

    devices = params.train.devices
    on_gpus = params.device.startswith("cuda") or (params.device == "auto" and torch.cuda.is_available())
    if on_gpus and torch.cuda.device_count() < devices:
        raise TrainingError(f"train.devices={devices} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    with tempfile.TemporaryDirectory(prefix="gancore-ddp-") as tmp:
        tree = params.model_dump(mode="json")
        tree["tracking"]["enabled"] = False
        params_file, summary_file = Path(tmp) / "params.yaml", Path(tmp) / "summary.json"
        params_file.write_text(yaml.safe_dump(tree, sort_keys=False))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={devices}",
            "-m",
            "gancore.cli",
            "train",
            "--params",
            str(params_file),
            "--out",
            str(layout.root),
        ]
        if restart:
            command.append("--restart")
        env = {**os.environ, SUMMARY_ENV: str(summary_file)}
        if params.device == "cpu" or not torch.cuda.is_available():
            # One intra-op thread per rank unless told otherwise: N ranks share the cores.
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
        done = subprocess.run(command, env=env)
        if done.returncode != 0 or not summary_file.exists():
            raise TrainingError(
                f"distributed training on {devices} processes failed (torchrun exit code {done.returncode}); see its output above"
            )
        summary: dict[str, Any] = json.loads(summary_file.read_text())
    return summary


def write_summary(summary: dict[str, Any]) -> None:
    """Rank 0 hands its summary to the process that launched torchrun (see :func:`launch`)."""
    path = os.environ.get(SUMMARY_ENV)
    if path:
        Path(path).write_text(json.dumps(summary))
