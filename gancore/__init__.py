"""gancore: a reproducible GAN experimentation library.

The public plugin API is ``hookimpl`` and ``Architecture``. This module stays light: it imports
neither torch nor any orchestrator, so ``gan --help`` answers quickly and the core runs on a GPU
machine that has only torch, torchvision, numpy, pluggy, pydantic and pyyaml. Importing it has no
side effects on the process (see :mod:`gancore.environment` for what the entry points set).
"""

from gancore.hookspecs import hookimpl
from gancore.registry import Architecture

__version__ = "0.2.0"
__all__ = ["Architecture", "hookimpl", "__version__"]
