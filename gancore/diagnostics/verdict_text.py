"""The words of a verdict: headlines, and the phrases its findings are made of (what
:mod:`gancore.diagnostics.verdict` decides, said; no rule lives here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HEADLINES = {
    "complete_collapse": "Complete mode collapse: nearly all samples are the same.",
    "vanishing_gradients": "Vanishing generator gradients: the discriminator rejects the samples and the generator stopped learning.",
    "partial_collapse": "Partial mode collapse: some modes of the data are missing from the samples.",
    "intra_mode_collapse": "Collapse inside the modes: within the modes they reach (or outside every cluster), the samples "
    "differ too little or cover too little of the data's variety.",
    "data_copying": "Data copying: the generator reproduces its training data instead of new samples like them.",
    "discriminator_overfitting": "The discriminator memorises its training data: it tells training examples from held-out real ones.",
    "not_converged": "Not converged: the generator has not (yet) learned the data.",
}


def in_part(check: Mapping[str, Any]) -> str:
    """Where a mixture's check was found: in a part (the mixture's average hid it)."""
    if check.get("part") is None:
        return ""
    others = [i for i in check.get("parts_flagged") or () if i != check["part"]]
    also = f" (and part{'s' if len(others) > 1 else ''} {', '.join(map(str, others))})" if others else ""
    return f" in part {check['part']}{also}"


def short_modes_text(f: Mapping[str, Any]) -> str:
    return _short_modes_text(f) + _short_cells_text(f)


def _short_cells_text(f: Mapping[str, Any]) -> str:
    short = f.get("outside_cells_short")
    if not short:
        return ""
    return (
        f"; {short} of the {f.get('outside_cells')} regions the rows outside every cluster are cut into "
        f"({f.get('outside_cells_short_share') or 0.0:.1%} of the training rows) hold under a quarter of their share "
        "of samples, where a faithful generator would all but surely place more"
    )


def _short_modes_text(f: Mapping[str, Any]) -> str:
    count, labels = f.get("modes_short") or 0, list(f.get("modes_short_labels") or [])
    outside = ""
    if f.get("outside_short"):
        gen, real = f.get("outside_share"), f.get("outside_share_real")
        shares = f" ({gen:.1%} of samples, {real:.1%} of training rows)" if gen is not None and real is not None else ""
        outside = f"; short of the rows outside every cluster{shares}, where a faithful generator would all but surely place more"
    if count <= 0:
        return outside
    shown = ", ".join(labels) + (", ..." if count > len(labels) else "")
    return (
        f"; {count} mode(s) with no sample or under a quarter of their share ({shown}), "
        "where a faithful generator would all but surely place more" + outside
    )


def copies_text(k: int | None) -> str:
    """What a near duplicate is at the neighbour the data's ties asked for."""
    return "a near duplicate" if not k or k == 1 else f"{k} near duplicates (real data often repeat values exactly)"


def healthy_text(f: Mapping[str, Any], eq: Mapping[str, Any] | None) -> str:
    parts = []
    if f.get("modes_total") is not None:
        parts.append(f"{f.get('modes_covered')} of {f['modes_total']} modes covered")
    if f.get("high_quality_fraction") is not None:
        parts.append(f"{f['high_quality_fraction']:.1%} of samples high quality")
    if f.get("dispersion_ratio") is not None:
        parts.append(f"spread inside modes {f['dispersion_ratio']:.2f} of the data's")
    if f.get("pairwise_distance_ratio") is not None:
        parts.append(f"overall spread {f['pairwise_distance_ratio']:.2f} of the data's")
    if f.get("duplicate_rate") is not None and f.get("duplicate_quantile") is not None:
        parts.append(f"near duplicates {f['duplicate_rate']:.1%} (chance {f['duplicate_quantile']:.0%})")
    if (eq or {}).get("flag"):
        parts.append("D(x) and D(G(z)) average near the 1/2 equilibrium")
    text = "Healthy: no sign of mode collapse (across or inside modes), data copying, vanishing gradients or non-convergence"
    return text + (" (" + "; ".join(parts) + ")." if parts else ".")
