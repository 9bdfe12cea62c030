"""Which torch device a stage runs on (``params.device``), and the software it computes with.

The code, the parameters and the seed fix a run's bits only on one install: another torch release
or a CPU with other vector instructions (and, for larger models, another number of intra-op
threads) may round a convolution differently in the last bit, and thousands of GAN steps grow that
bit into another generator, within the seeds' spread (10 % of MNIST, seed 0, one commit trained in
two sessions, 20,000 steps: FID 90.1 and 91.4, most likely two installs). :func:`software` names
what a run's bits depend on besides the code; training summaries, evaluation cards (the
evaluation's own) and the data-limited benchmark record it.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from gancore.errors import GanCoreError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu. An explicit device that is not there is an error.

    Falling back silently from an explicit ``cuda`` would turn a GPU run into a CPU run that
    takes a hundred times longer, so it is refused with a message saying what is available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    base, _, index = name.partition(":")
    if base == "cpu":
        return torch.device("cpu")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise GanCoreError(
                f"device={name!r} was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
                "use device=auto or device=cpu"
            )
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise GanCoreError(f"device={name!r} was requested but only {count} CUDA device(s) exist: use cuda:0..cuda:{count - 1}")
        return torch.device(name)
    if base == "mps":
        if not _mps_available():
            raise GanCoreError(f"device={name!r} was requested but MPS is not available; use device=auto or device=cpu")
        return torch.device("mps")
    raise GanCoreError(f"unknown device {name!r}; use one of auto, cpu, cuda, cuda:N, mps")


# Below this many weights (G and D together) a CPU training step is a chain of tiny matrix products,
# for which extra intra-op threads cost more in synchronisation than they bring: the default ring8
# MLP (35k weights) trained 8 parts x 1,000 steps in 2 CPU-minutes on one thread, and in over 20
# wall-minutes on torch's default two threads beside one other busy process on a 2-core machine.
SMALL_MODEL_WEIGHTS = 1_000_000
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_small_model_threads(device: torch.device, *models: torch.nn.Module) -> int:
    """On a CPU, train small models on one intra-op thread unless the user chose a thread count
    (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``). Returns the thread count in effect."""
    if device.type == "cpu" and not any(os.environ.get(v) for v in THREAD_VARIABLES):
        weights = sum(p.numel() for m in models for p in m.parameters())
        if weights < SMALL_MODEL_WEIGHTS:
            torch.set_num_threads(1)
    return torch.get_num_threads()


def software(device: Any = "cpu") -> str:
    """What, besides the code and the seed, decides a run's bits on ``device`` (a name as
    ``params.device`` takes it, ``auto`` included, or a torch.device): the torch, numpy and Python
    releases and the kernels torch picks (the CPU's vector instructions and intra-op threads, or
    the GPU, CUDA and cuDNN)."""
    import numpy

    if str(device) == "auto":
        device = resolve_device("auto")
    chosen = torch.device(device)
    parts = [f"torch {torch.__version__}", f"numpy {numpy.__version__}", f"Python {platform.python_version()}"]
    kind = chosen.type
    if kind == "cuda" and torch.cuda.is_available():
        index = chosen.index
        major, minor = torch.cuda.get_device_capability(index)
        parts.append(
            f"{torch.cuda.get_device_name(index)} (sm_{major}{minor}), CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        )
    elif kind == "cpu":
        threads = torch.get_num_threads()
        parts.append(f"CPU kernels {torch.backends.cpu.get_cpu_capability()}, {threads} thread{'s' if threads > 1 else ''}")
    else:
        parts.append(kind)
    return ", ".join(parts)
