"""Plain-text and markdown rendering of figures, shared by the diagnosis and the flows' reports."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from gancore.figures import FIGURES
from gancore.ranking import finite_number


def fmt(value: Any) -> str:
    """A figure for people: 4 significant digits, ``n/a`` for a missing one."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, for a terminal."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(figures: dict[str, Any], key: str) -> str:
    """One figure for people; counts with what they count of (modes of the known ones, NDB's bins)."""
    value = fmt(figures.get(key))
    if key == "modes_covered":
        return f"{value} / {fmt(figures.get('modes_total'))}"
    if key == "ndb":
        return f"{value} / {fmt(figures.get('ndb_bins'))}"
    return value


def headline_rows(evaluate: dict[str, Any], diagnose: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of the figures a paper prints, where the run has them."""
    rows = []
    for label, source, key in HEADLINE:
        figures = (evaluate if source == "evaluate" else diagnose) or {}
        if key in figures:
            rows.append((label, _cell(figures, key)))
    return rows


_FIGURE = {f.key: f for f in FIGURES}


def comparison_headers(keys: Sequence[str]) -> list[str]:
    """The columns of a table of runs (the sweep's, the remedies'): the verdict, then the figures
    ``keys`` names, under their labels in :data:`gancore.figures.FIGURES`."""
    return ["verdict", *(_FIGURE[k].label for k in keys)]


def comparison_cells(result: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """One run's cells under :func:`comparison_headers` (``result``: its ``evaluate`` and
    ``diagnose`` figures, as a pipeline run returns them)."""
    figures = {**(result.get("evaluate") or {}), **(result.get("diagnose") or {})}
    return [str(figures.get("verdict", "n/a")), *(_cell(figures, k) for k in keys)]


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN for a single value: no spread to estimate; NaN
    both when a value is NaN, e.g. no high-quality sample to score: statistics.stdev raised on it
    and the whole benchmark died after its runs)."""
    if any(math.isnan(v) for v in values):
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan"))


def pm(value: tuple[float, float], digits: int) -> str:
    mean, se = value
    return f"{mean:.{digits}f}" + ("" if math.isnan(se) else f"+-{se:.{digits}f}")


def _mean_cell(values: list[float]) -> str:
    mean, se = mean_se(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4g}" + ("" if math.isnan(se) else f" ± {se:.2g}")


def seeds_headers(keys: Sequence[str]) -> list[str]:
    """The columns of a table of run groups over seeds: how many ran, their verdicts, and the
    figures ``keys`` names as mean ± standard error."""
    return ["runs", "verdicts", *(_FIGURE[k].label for k in keys)]


def seeds_cells(results: Sequence[dict[str, Any] | None], keys: Sequence[str]) -> list[str]:
    """One group's cells under :func:`seeds_headers` (``results``: each run's, None where it
    failed). A figure some runs lack is averaged over those that have it, and says over how many."""
    figures = [{**(r.get("evaluate") or {}), **(r.get("diagnose") or {})} for r in results if r is not None]
    verdicts = Counter(str(f.get("verdict", "n/a")) for f in figures)
    cells = [f"{len(figures)} of {len(results)}", ", ".join(f"{n} {v}" for v, n in verdicts.most_common())]
    for key in keys:
        # finite numbers only, as the ranking averages them: a NaN is a figure not measured
        values = [v for f in figures if (v := finite_number(f.get(key))) is not None]
        cell = _mean_cell(values) if values else "n/a"
        if values and len(values) < len(figures):
            cell += f" ({len(values)} run{'s' if len(values) > 1 else ''})"
        totals = {f.get("modes_total") for f in figures}
        if key == "modes_covered" and values and len(totals) == 1 and None not in totals:
            cell += f" / {fmt(totals.pop())}"
        cells.append(cell)
    return cells


# (label, source, key) of the figures a run's summary shows: gancore.figures.FIGURES.
HEADLINE = tuple((f.label, f.source, f.key) for f in FIGURES if f.summary)


def run_description(evaluate: dict[str, Any], diagnose: dict[str, Any], params: Any = None, picture: str | None = None) -> str:
    """The run page's description: the verdict with its explanation, the sample picture
    (``picture``: its URL), the headline figures, the remedies (with the settings that apply them)
    and what ran, in markdown."""
    parts = [f"**Verdict: {diagnose.get('verdict', 'n/a')}**" + (f" — {diagnose['explanation']}" if diagnose.get("explanation") else "")]
    if picture:
        parts.append(f"![samples]({picture})")
    rows = headline_rows(evaluate, diagnose)
    if rows:
        parts.append(markdown_table(["figure", "value"], [list(r) for r in rows]))
    remedies = diagnose.get("remedies") or []
    if remedies:
        parts.append("**Remedies**\n\n" + "\n".join(f"- {r}" for r in remedies))
    if params is not None:
        flat = params.flat()
        what = ", ".join(
            f"{k}={fmt(flat[k])}" for k in ("data.name", "model.arch", "model.pack", "loss.name", "train.steps", "seed") if k in flat
        )
        parts.append(f"Ran: {what}. Samples: the `samples` image; training: the `progress` images and the `train/`, `monitor/` curves.")
    return "\n\n".join(parts)
