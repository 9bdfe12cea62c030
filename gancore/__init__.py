"""gancore: a reproducible GAN experimentation library.

The public plugin API is ``hookimpl`` and ``Architecture``. This module stays light: it imports
neither torch nor any orchestrator, so ``gan --help`` answers quickly and the core runs on a GPU
machine that has only torch, torchvision, numpy, pluggy, pydantic and pyyaml.
"""

import os as _os

# Telemetry off in everything the project starts (the CLI, flows, stage subprocesses).
for _key, _value in {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}.items():
    _os.environ.setdefault(_key, _value)

from gancore.hookspecs import hookimpl  # noqa: E402
from gancore.registry import Architecture  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Architecture", "hookimpl", "__version__"]
