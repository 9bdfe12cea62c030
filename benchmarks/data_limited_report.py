"""The data-limited benchmark's report (:mod:`data_limited`): a line per run, the table over
seeds, and the published anchors beside it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gancore.report import mean_se, pm

# Published anchors (../shared/reference.md): FID without -> with augmentation.
ANCHORS = [
    ("DiffAugment, BigGAN, CIFAR-10 100 %", 9.59, 8.70),
    ("DiffAugment, BigGAN, CIFAR-10 20 %", 21.58, 14.04),
    ("DiffAugment, BigGAN, CIFAR-10 10 %", 39.78, 22.40),
    ("DiffAugment, StyleGAN2, CIFAR-10 10 %", 36.02, 14.50),
    ("ADA, StyleGAN2, MetFaces (1,336 images)", 57.26, 18.22),
]


def anchors_text() -> str:
    """The anchors as a markdown table, each with its change."""
    rows = [f"| {name} | {before} | {after} ({100 * (after / before - 1):+.0f} %) |" for name, before, after in ANCHORS]
    return (
        "Published anchors (other data and networks), FID without -> with augmentation:\n\n| setting | without | with |\n|---|---|---|\n"
        + "\n".join(rows)
    )


def _stat(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[float, float]:
    return mean_se([scale * float(r[key]) for r in rows if r.get(key) is not None] or [float("nan")])


def table(results: list[dict[str, Any]], order: Iterable[tuple[str, float, str]], cost: str = "CPU-min/run") -> tuple[str, dict[str, Any]]:
    """The markdown table of ``results`` over seeds, one row per (data, fraction, policy) in ``order``
    that has runs; and its figures by ``data/fraction/policy``. FID changes are against the ``none``
    row of the same data and fraction (before it in ``order``)."""
    summary: dict[str, Any] = {}
    lines = [
        "| data | train share | augmentation | seeds | FID (domain) | IS (domain) | modes | high quality % | D gap (train - held-out) | "
        f"D AUC (train > held-out) | r_t | overfitting flagged | p at the end | {cost} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base: dict[tuple[str, float], float] = {}
    for data, fraction, policy in order:
        rows = [r for r in results if (r["data"], r["fraction"], r["policy"]) == (data, fraction, policy)]
        if not rows:
            continue
        s = {
            "n": len(rows),
            "fid": _stat(rows, "fid"),
            "is": _stat(rows, "is_mean"),
            "modes": _stat(rows, "modes_covered"),
            "hq": _stat(rows, "high_quality_fraction", 100),
            "gap": _stat(rows, "d_gap"),
            "auc": _stat(rows, "d_auc"),
            "rt": _stat(rows, "r_t_train"),
            "p": _stat(rows, "p_final"),
            "flagged": sum(r["overfitting"] for r in rows),
            "cpu": _stat(rows, "cpu_min"),
        }
        if policy == "none":
            base[data, fraction] = s["fid"][0]
        before = base.get((data, fraction))
        s["fid_change"] = None if before is None else s["fid"][0] / before - 1
        summary[f"{data}/{fraction:g}/{policy}"] = s
        change = "" if policy == "none" or s["fid_change"] is None else f" ({100 * s['fid_change']:+.0f} %)"
        lines.append(
            f"| {data} | {fraction:.0%} | {policy} | {s['n']} | {pm(s['fid'], 2)}{change} | {pm(s['is'], 2)} | {pm(s['modes'], 1)} | "
            f"{pm(s['hq'], 1)} | {pm(s['gap'], 3)} | {pm(s['auc'], 3)} | {pm(s['rt'], 2)} | {s['flagged']}/{s['n']} | {'-' if policy == 'none' else pm(s['p'], 2)} | "
            f"{pm(s['cpu'], 1)} |"
        )
    return "\n".join(lines), summary


def line(r: dict[str, Any], unit: str) -> str:
    """One run, as it finishes."""
    return (
        f"{r['data']:13s} {r['fraction']:5.0%} {r['policy']:8s} seed {r['seed']}: FID {r['fid']:.2f}, IS {r['is_mean']:.2f}, "
        f"D gap {r['d_gap'] if r['d_gap'] is None else round(r['d_gap'], 3)}, {r['verdict']}, {r['cpu_min']:.1f} {unit}-min"
        + ("" if r["continued_from"] is None else f" (continued from step {r['continued_from']})")
        + f", step {r['steps']}"
        + ("" if r.get("pace_s") is None else f", {1000 * r['pace_s']:.1f} ms a step once warm")
    )
