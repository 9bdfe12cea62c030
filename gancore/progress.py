"""Progress for the long steps: training, the domain classifier, a sweep's members, a mixture's parts.

On a terminal (stderr is a TTY) a tqdm bar. Elsewhere (Prefect's logs, CI, DVC's captured output)
plain lines on stderr, one every :data:`LINE_SECONDS` and one at the end, each with the position,
the time spent and the time left: ``[progress] train part 3/8: step 400/1000 (40%), 12s elapsed,
about 18s left``. ``GANCORE_PROGRESS=0`` hides both; :func:`say` prints one-off notes (the
training plan, a part's smaller batch) under the same switch.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

PROGRESS_ENV = "GANCORE_PROGRESS"
# Seconds between progress lines off a terminal: often enough to see a run is alive, rarely enough
# not to flood a log (a 90-minute training run writes 180 lines).
LINE_SECONDS = 30.0


def shown() -> bool:
    return os.environ.get(PROGRESS_ENV, "1") != "0"


def enabled() -> bool:
    """Whether bars are drawn: on a terminal, unless switched off."""
    return shown() and sys.stderr.isatty()


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def say(text: str) -> None:
    """A one-off note for the person watching (stderr, which Prefect forwards to the run's log)."""
    if shown():
        print(f"[gancore] {text}", file=sys.stderr, flush=True)


class Lines:
    """tqdm's interface (update, set_postfix, close, context manager) writing a line at intervals."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, interval: float = LINE_SECONDS):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.start_n, self.interval = initial, interval
        self.started = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.started
        done = self.n - self.start_n
        left = elapsed / done * (self.total - self.n) if done > 0 else float("nan")
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = f", about {duration(left)} left" if done > 0 and self.n < self.total else ""
        extra = f" [{self.postfix}]" if self.postfix else ""
        print(
            f"[progress] {self.desc}: {self.unit} {self.n}/{self.total}{share}, {duration(elapsed)} elapsed{eta}{extra}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n > self.start_n:
                self._line(time.monotonic())


class _Silent:
    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def bar(total: int, desc: str, unit: str, initial: int = 0, show: bool = True) -> Any:
    """A tqdm bar on a terminal, progress lines elsewhere, nothing when ``show`` is false or
    ``GANCORE_PROGRESS=0``."""
    if not (show and shown()):
        return _Silent()
    if not sys.stderr.isatty():
        return Lines(total, desc, unit, initial)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
