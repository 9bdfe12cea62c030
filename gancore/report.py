"""Plain-text and markdown rendering of figures, shared by the diagnosis and the flows' reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gancore.figures import FIGURES


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
