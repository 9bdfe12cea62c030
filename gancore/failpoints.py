"""Failpoints: named places where ``$GANCORE_FAULTS`` makes this process fail the way real
systems fail, for the fault suite (``tests/faults``, ``benchmarks/faults.py``).

``GANCORE_FAULTS`` holds comma-separated entries ``POINT[@N]=ACTION``:

* ``POINT`` is a name passed to :func:`hit`: ``train.step`` (N = the step number), or
  ``write:<file name>`` for an atomic write of that file (N = its N-th write in this process);
  without ``@N`` every hit fires.
* ``ACTION`` is ``kill`` (SIGKILL this process, as a crash or the OOM killer would), ``raise``
  (a transient :class:`InjectedFault`, fired once per process, so that a retry gets past it) or
  ``enospc`` (the ``OSError`` a full disk gives).

Unset (the normal case), :func:`hit` is one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
from functools import lru_cache

ENV = "GANCORE_FAULTS"
ACTIONS = ("kill", "raise", "enospc")

_counts: dict[str, int] = {}
_fired: set[tuple[str, int | None]] = set()


class InjectedFault(OSError):
    """A transient failure injected by ``$GANCORE_FAULTS`` (an ``OSError``, as I/O faults are)."""


@lru_cache(maxsize=4)
def _parse(spec: str) -> dict[str, list[tuple[int | None, str]]]:
    table: dict[str, list[tuple[int | None, str]]] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        where, sep, action = entry.rpartition("=")
        point, _, index = where.partition("@")
        if not sep or not point or action not in ACTIONS or (index and not index.isdigit()):
            raise ValueError(f"{ENV}: cannot read {entry!r}; expected POINT[@N]=ACTION with ACTION one of {', '.join(ACTIONS)}")
        table.setdefault(point, []).append((int(index) if index else None, action))
    return table


def hit(point: str, index: int | None = None, path: object = None) -> None:
    """Fire the fault configured for ``point`` (at ``index``, default: this point's hit count)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    entries = _parse(spec).get(point)
    if not entries:
        return
    if index is None:
        index = _counts[point] = _counts.get(point, 0) + 1
    for at, action in entries:
        if at is not None and at != index:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device (injected by GANCORE_FAULTS)", str(path) if path else None)
        elif (point, at) not in _fired:
            _fired.add((point, at))
            raise InjectedFault(errno.EIO, f"injected transient fault at {point} #{index} (GANCORE_FAULTS)")
