"""Your own vector data: ``data.name: points`` with ``data.path`` naming a ``.npy`` or ``.csv`` file.

One row per point, one numeric column per coordinate (a ``.csv`` may start with a header row; its
delimiter is found from the first lines: comma, semicolon, tab or spaces). Every value must be a
finite number: the first offending cell is named by row and column.

The prepared data are **standardised** with the training split's per-column mean and standard
deviation, which ``meta.json`` keeps under ``units``; ``gan sample`` maps the samples back and
writes them in the file's units beside the prepared-space tensor (``samples/samples.csv``).

The data's modes are unknown, so prepare finds its clusters (:func:`gancore.cluster_selection.select_clusters`:
a Gaussian mixture, its size and covariance model chosen by BIC) and records the mixture under ``modes``. That
mixture is the domain classifier of these data (its posterior gives p(cluster | x)), the parts of
the mixture of GANs (``mixture.parts: auto``) and the modes the diagnosis counts; ``modes.estimated``
says that they were found, not given.
"""

from __future__ import annotations

import csv
import functools
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from gancore.data.prepared import PreparedData
from gancore.errors import DataError, ParamsError
from gancore.io import file_digest
from gancore.seeds import generator

if TYPE_CHECKING:  # pragma: no cover
    from gancore.config import Params
    from gancore.datasets import DatasetSpec
    from gancore.layout import Layout

SUFFIXES = (".npy", ".csv")
# The fewest rows that leave a test split able to fill the evaluation's 10 splits.
MIN_ROWS = 20
# Points the cluster count is chosen on (a seeded subset): 5,000 pin the BIC curve of 2-D data
# with 25 clusters; the final mixture is fitted on the whole training split, and grown there
# where a cluster too small to show in the subset is (gancore.cluster_growth).
SELECT_POINTS = 5000
VALUE_MARGIN = 0.05  # value_range: the data's range widened by this share on each side
# The lines the CSV dialect (delimiter) is sniffed from, and all a column count reads.
DIALECT_LINES = 20


class PointsError(DataError):
    """A points file that cannot be read as a table of finite numbers."""


def _check_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.suffix.lower() not in SUFFIXES:
        raise PointsError(f"{p} is not a .npy or .csv file; give data.path a .npy array [N, d] or a .csv of numeric columns")
    if p.is_dir():
        raise PointsError(f"{p} is a folder; give data.path a .npy or .csv file")
    if not p.is_file():
        raise PointsError(f"{p} does not exist; give data.path an existing .npy or .csv file")
    return p


def _dialect(sample: str) -> Any:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t ")
    except csv.Error:
        return csv.excel  # one column, or a sample the sniffer cannot read: commas


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(p: Path, head: int | None = None) -> tuple[list[str] | None, list[list[str]], list[int]]:
    """The header (None without one), the data rows and each data row's line in the file (blank
    lines are skipped, and must not shift the rows an error names); ``head``: only the first that
    many non-blank lines (the column count needs no more: a 38 MB file took 4 s to parse whole)."""
    try:
        text = (p.read_bytes() if head is None else _head_bytes(p, head)).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PointsError(
            f"{p} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r}); save it as UTF-8"
        ) from None
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()][:head]
    lines = [line for _, line in numbered]
    if not lines:
        raise PointsError(f"{p} is empty; it needs one row per point")
    dialect = _dialect("\n".join(lines[:DIALECT_LINES]))
    rows = [[cell.strip() for cell in row if cell.strip() != "" or dialect.delimiter != " "] for row in csv.reader(lines, dialect)]
    header = None
    line_of = [n for n, _ in numbered]
    if rows:
        numbers = [_is_number(cell) for cell in rows[0]]
        if not any(numbers):
            header, rows, line_of = rows[0], rows[1:], line_of[1:]
            if any(not name for name in header):
                raise PointsError(
                    f"{p}, row {numbered[0][0]} has a column without a name (column {header.index('') + 1}): an index column "
                    "(pandas' to_csv writes one) would be read as a coordinate; save without it (index=False) or name it"
                )
        elif not all(numbers):  # a header names every column; data has a number in every cell
            names = ", ".join(repr(c) for c, number in zip(rows[0], numbers) if not number)
            raise PointsError(
                f"{p}, row {line_of[0]} mixes numbers and text ({names}): as a header every cell must be a column name, "
                "as data every cell a number; fix that row"
            )
    return header, rows, line_of


def _head_bytes(p: Path, lines: int) -> bytes:
    """The file's first bytes, up to and including its ``lines``-th non-blank line (split at newline
    bytes, whole lines only: the decoding and the line rule are then the whole read's)."""
    taken: list[bytes] = []
    with p.open("rb") as fh:
        for raw in fh:
            taken.append(raw)
            lines -= bool(raw.strip())
            if lines <= 0:
                break
    return b"".join(taken)


def _load_npy(p: Path, mmap_mode: Literal["r"] | None = None) -> np.ndarray:
    """The array of a ``.npy`` file; an empty file or an ``.npz`` archive under that name is
    refused like any unreadable one (np.load raised EOFError, or returned an archive)."""
    try:
        array = np.load(p, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PointsError(f"{p} is not a readable .npy array ({exc or type(exc).__name__})") from None
    if not isinstance(array, np.ndarray):
        if hasattr(array, "close"):
            array.close()
        raise PointsError(f"{p} is a .npz archive, not one .npy array; save the points with np.save")
    return array


@functools.lru_cache(maxsize=32)
def _dims_cached(path: str, mtime: float, size: int) -> int:
    p = Path(path)
    if p.suffix.lower() == ".npy":
        array = _load_npy(p, mmap_mode="r")
        if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] < 1):
            raise PointsError(f"{p} holds an array of shape {list(array.shape)}; points need [N, d] (one row per point) or [N]")
        return 1 if array.ndim == 1 else int(array.shape[1])
    header, rows, _ = _csv_rows(p, head=DIALECT_LINES)
    if header is not None:
        return len(header)
    return len(rows[0]) if rows else 0


def point_dims(path: str | Path) -> int:
    """The number of columns of the points file ``path`` (cheap: the header or first row only)."""
    p = _check_path(path)
    stat = p.stat()
    dims = _dims_cached(str(p.resolve()), stat.st_mtime, stat.st_size)
    if dims < 1:
        raise PointsError(f"{p} has no columns; it needs one numeric column per coordinate")
    return dims


def load_points(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """The points of ``path`` as float64 [N, d] and the column names; errors name the bad cell."""
    p = _check_path(path)
    if p.suffix.lower() == ".npy":
        raw = _load_npy(p)
        if raw.ndim == 1:
            raw = raw[:, None]
        if raw.ndim != 2:
            raise PointsError(f"{p} holds an array of shape {list(raw.shape)}; points need [N, d] (one row per point)")
        if not (np.issubdtype(raw.dtype, np.number) or raw.dtype == np.bool_) or np.issubdtype(raw.dtype, np.complexfloating):
            raise PointsError(f"{p} holds {raw.dtype} values; points need real numbers")
        x = raw.astype(np.float64)
        names = [f"x{j}" for j in range(x.shape[1])]
        line_of: list[int] = []
    else:
        header, rows, line_of = _csv_rows(p)
        width = len(header) if header is not None else len(rows[0]) if rows else 0
        names = header if header is not None else [f"x{j}" for j in range(width)]
        x = np.empty((len(rows), width), dtype=np.float64)
        for i, row in enumerate(rows):
            if len(row) != width:
                raise PointsError(f"{p}, row {line_of[i]}: {len(row)} values where the file has {width} columns ({', '.join(names)})")
            for j, cell in enumerate(row):
                try:
                    x[i, j] = float(cell)
                except ValueError:
                    raise PointsError(f"{p}, row {line_of[i]}, column {names[j]!r}: {cell!r} is not a number") from None
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(x[i, j]) else "inf"
        where = f"row {line_of[i]}" if p.suffix.lower() == ".csv" else f"row {i} (0-based)"
        raise PointsError(
            f"{p}, {where}, column {names[j]!r}: {what} ({int(bad.sum())} non-finite values in all); remove or fill those rows"
        )
    if len(x) < MIN_ROWS:
        raise PointsError(f"{p} has {len(x)} rows; points need at least {MIN_ROWS} (a training and a test split)")
    return x, names


def build(spec: DatasetSpec, params: Params, layout: Layout) -> PreparedData:
    """The registry's builder (gancore.datasets): the points file of ``data.path``."""
    d = params.data
    assert d.path is not None  # validated with the parameters
    return prepare_points(d.path, params.seed, d.n_train, d.n_test, params.mixture.max_parts)


def prepare_points(path: str, seed: int, n_train: int | None, n_test: int | None, max_clusters: int) -> PreparedData:
    """The points file as prepared data: a seeded split, standardised, with its clusters found."""
    from gancore.background import is_tested, outside_mask
    from gancore.cluster_growth import grow_on_all_rows
    from gancore.cluster_selection import fit_mixture, select_clusters
    from gancore.lattice import dequantized, rounded_columns
    from gancore.mode_merging import merge_components

    p = _check_path(path)
    # dvc repro runs stages in the repository's root, whose data/own/ prepare depends on.
    if os.environ.get("DVC_STAGE") and not p.resolve().is_relative_to((Path.cwd() / "data" / "own").resolve()):
        warnings.warn(
            f"{p} is outside data/own/, the folder dvc.yaml's prepare stage depends on: `dvc repro` will not notice "
            "when the file changes; move it to data/own/",
            stacklevel=2,
        )
    x, names = load_points(p)
    n = len(x)
    n_test = n_test or max(MIN_ROWS // 2, round(0.1 * n))
    if n_test >= n:
        raise ParamsError([("data.n_test", f"{n_test} leaves no training rows out of the {n} in {p}; use fewer")])
    perm = torch.randperm(n, generator=generator(seed, "points_split"))
    test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
    if n_train is not None:
        if n_train > len(train_idx):
            raise ParamsError([("data.n_train", f"{n_train} is more than the {len(train_idx)} training rows of {p}; use at most that")])
        train_idx = train_idx[torch.randperm(len(train_idx), generator=generator(seed, "train_subset"))[:n_train].sort().values]
    train64, test64 = torch.from_numpy(x[train_idx.numpy()]), torch.from_numpy(x[test_idx.numpy()])
    mean = train64.mean(0)
    std = train64.std(0) if len(train64) > 1 else torch.ones_like(mean)
    overflow = ~(torch.isfinite(mean) & torch.isfinite(std))
    if overflow.any():
        j = int(overflow.nonzero()[0])
        raise PointsError(
            f"{p}, column {names[j]!r}: values up to {float(train64[:, j].abs().max()):.3g} overflow the mean or standard deviation "
            "in float64; rescale that column (e.g. to other units)"
        )
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays as it is, centred
    train, test = ((train64 - mean) / std), ((test64 - mean) / std)

    # the clusters are fitted to rounded columns spread over their rounding interval (gancore.lattice)
    rounded = rounded_columns(train, max_clusters)
    spread = dequantized(train, rounded, seed)
    pick = torch.randperm(len(train), generator=generator(seed, "points/select"))[:SELECT_POINTS]
    selection = select_clusters(spread[pick], max_clusters, seed, "points/select")
    selection.warn_if_at_limit()  # the data's modes are these clusters: a capped count is said, as for the parts
    gmm = fit_mixture(spread, selection.k, seed, 5, "points/clusters", selection.covariance, selection.mixture)
    gmm, growth = grow_on_all_rows(spread, gmm, max_clusters, seed, pick)
    gmm.groups, merging = merge_components(gmm)
    outliers = int(outside_mask(train, gmm).sum())
    if outliers:
        flat = is_tested(gmm, outliers / len(train))
        warnings.warn(
            f"{outliers} training row(s) of {p.name} ({outliers / len(train):.2%}) lie outside every cluster (a uniform "
            "background over the data's range explains them better): they are no mode; "
            + (
                "flat rows the data hold (the background weighs a tenth or more): the diagnosis expects a generator to "
                "place as many samples there, and the mixture of GANs (mixture.parts: auto) trains them as a part of their own"
                if flat
                else "stray rows (the background weighs under a tenth), which train in the part of their most probable cluster"
            ),
            stacklevel=2,
        )
    lo, hi = float(train.min()), float(train.max())
    margin = VALUE_MARGIN * (hi - lo or 1.0)
    stat = p.stat()
    meta = {
        "value_range": [lo - margin, hi + margin],
        "value_range_definition": f"standardised units: the training data's range +- {VALUE_MARGIN:.0%}",
        "units": {
            "columns": names,
            "mean": mean.tolist(),
            "std": std.tolist(),
            "definition": "prepared = (x - mean) / std per column (training split); samples.csv is back in the file's units",
        },
        "modes": {
            "count": gmm.clusters,
            "estimated": True,
            "definition": f"{gmm.clusters} clusters found in the standardised training data: a Gaussian mixture of {gmm.k} "
            f"components with {gmm.covariance} covariances (size and covariance model chosen by BIC on a subset; clusters too "
            "small to show in it added on every row: modes.growth), grouped into clusters of one mode each (modes.merging; "
            "modes.groups: each component's cluster)",
            **gmm.as_modes(),
            "outliers": {
                "rows": outliers,
                "row_share": outliers / len(train),
                "share": gmm.noise or 0.0,
                **({"log_density": gmm.noise_log_density} if gmm.noise else {}),
                **({"box": gmm.noise_box.tolist()} if gmm.noise and gmm.noise_box is not None else {}),
                "definition": "training rows a uniform background over the data's box explains better than every cluster "
                "(rows, and row_share of the training rows; the background's weight: share, its density: exp(log_density) "
                "over its box: lowest and highest corner, in standardised units); no mode. Where share is a tenth or more, "
                "flat rows the data hold: the diagnosis finds a generator far short of row_share short of them, as of a mode, "
                "and the mixture of GANs (mixture.parts: auto) trains them as a part of their own; under it, stray rows (a "
                "few), each in the part of its most probable cluster",
            },
            "selection": selection.as_dict(),
            "growth": growth,
            "rounded_columns": {
                "columns": [names[c.column] for c in rounded],
                "steps": [c.step * float(std[c.column]) for c in rounded],
                "laws": [c.law_in_units(float(mean[c.column]), float(std[c.column])) for c in rounded],
                "definition": "columns whose values lie on a lattice (whole multiples of a step, repeated) and whose counts a "
                "Gaussian mixture fitted to them as rounded data explains better than categories (by BIC): the clusters were fitted "
                "with each value spread over +- half a step (its rounding interval), drawn from that mixture (laws: Gaussians, and "
                "a uniform background over the column's values for stray ones where BIC keeps one) truncated to it; steps and laws "
                "in the file's units",
            },
            "merging": merging,
        },
        "raw_sha256": {},
        "source": {"path": str(p.resolve()), "rows": n, "columns": len(names), "bytes": stat.st_size, "sha256": file_digest(p)},
    }
    # The clusters' labels stand where a labelled set has its classes (the real mode histogram).
    return PreparedData(meta, train.float(), test.float(), gmm.predict_cluster(train), gmm.predict_cluster(test))
