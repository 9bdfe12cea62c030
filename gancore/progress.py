"""Progress bars (tqdm) for the long steps: training, the domain classifier, a sweep's members.

Shown on a terminal only (stderr is a TTY), so that logs, CI output and DVC's captured output stay
clean; ``GANCORE_PROGRESS=0`` hides them there too.
"""

from __future__ import annotations

import os
import sys
from typing import Any

PROGRESS_ENV = "GANCORE_PROGRESS"


def enabled() -> bool:
    return os.environ.get(PROGRESS_ENV, "1") != "0" and sys.stderr.isatty()


def bar(total: int, desc: str, unit: str, initial: int = 0, show: bool = True) -> Any:
    """A tqdm bar, disabled (a no-op with the same methods) off a terminal or when ``show`` is false."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not (show and enabled()), dynamic_ncols=True)
