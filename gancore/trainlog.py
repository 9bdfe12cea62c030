"""``metrics/train_log.csv``: one row per ``train.log_every`` steps, written by training and read by
diagnostics, trackers and the monitor. The one reader and writer of the file.

Columns: :data:`COLUMNS` always, then any extra columns the rows carry (e.g. the collapse
monitor's ``monitor_*`` figures), in the order they first appear. Empty cells mean "not measured
at this step" (bn_drift_g without batch norm, monitor figures between monitor steps).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    "step",
    "loss_d",
    "loss_g",
    "d_real",
    "d_fake",
    "logit_real",
    "logit_fake",
    "value",
    "grad_norm_g",
    "grad_norm_d",
    "bn_drift_g",
    "seconds",
)
#: Measured on the training step itself (the rest are derived or bookkeeping).
STEP_STATS = COLUMNS[1:10]

Row = dict[str, Any]


def columns_of(rows: Iterable[Row]) -> list[str]:
    """:data:`COLUMNS`, then every other key of ``rows`` in first-seen order."""
    extra: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in COLUMNS:
                extra.setdefault(key)
    return [*COLUMNS, *extra]


def render(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    columns = columns_of(rows)
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        # repr-exact floats: a resumed run's rows compare equal to an uninterrupted run's.
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buf.getvalue()


def write(path: str | Path, rows: Sequence[Row]) -> None:
    from gancore.io import write_text

    write_text(path, render(rows))


def _cell(key: str, text: str | None) -> int | float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return int(value) if key == "step" and value.is_integer() else value


def read(path: str | Path) -> list[Row]:
    """Rows of the log, values as numbers (``step`` an int) and empty cells as None."""
    with open(path, newline="") as fh:
        return [{k: _cell(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]


def read_columns(path: str | Path, required: Sequence[str] = ()) -> dict[str, Any] | None:
    """The log as float64 numpy columns (None and unreadable cells -> NaN); None if the file is
    absent. ``required`` columns must be in the header (ValueError naming them otherwise)."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        missing = [c for c in required if c not in fields]
        if missing:
            raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; a training log has {', '.join(COLUMNS)}")
        rows = [{k: _cell(k, v) for k, v in row.items()} for row in reader]
    return {name: np.array([math.nan if r.get(name) is None else r[name] for r in rows], dtype=np.float64) for name in fields}
