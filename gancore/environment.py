"""The process environment the project's entry points run in: telemetry off everywhere, and the
software a run's numbers were computed with.

Importing gancore changes nothing; the entry points (``gan``, the flows' ``main``, the test
session) call :func:`quiet` themselves, and pass :data:`QUIET` on to the processes they start.

The code, the parameters and the seed fix a run's bits only with one install and thread count:
another torch release, a CPU with other vector instructions, or another number of intra-op threads
rounds a convolution differently in the last bit, and thousands of GAN steps grow that bit into
another generator, within the seeds' spread (10 % of MNIST, seed 0, one commit trained on two
sessions' installs, 20,000 steps: FID 90.1 and 91.4). :func:`software` names what a run's bits
depend on besides the code; training summaries, evaluation cards and the data-limited benchmark
record it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from typing import Any

QUIET: dict[str, str] = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def quiet(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Turn telemetry off in ``environ`` (default: this process), keeping what the user set."""
    env = os.environ if environ is None else environ
    for key, value in QUIET.items():
        env.setdefault(key, value)
    return env


def software(device: Any = "cpu") -> str:
    """What, besides the code and the seed, decides a run's bits on ``device`` (a name as
    ``params.device`` takes it, ``auto`` included, or a torch.device): the torch, numpy and Python
    releases and the kernels torch picks (the CPU's vector instructions and intra-op threads, or
    the GPU, CUDA and cuDNN)."""
    import numpy
    import torch

    if str(device) == "auto":
        from gancore.device import resolve_device

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
