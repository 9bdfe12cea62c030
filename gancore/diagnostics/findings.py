"""The conditions behind each verdict, with their thresholds: each adds the findings that hold
to a :class:`Findings`, and :func:`gancore.diagnostics.verdict.decide` ranks them (its docstring
gives the precedence and why each threshold sits where it does)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gancore.diagnostics.verdict_text import copies_text, in_part, short_modes_text

# A tenth of the real spread: collapsing ring8 onto one mode gives ~0.01, onto two neighbouring
# modes ~0.3, so 0.1 separates "one point" from "few modes". The same bound marks a single mode
# reduced to nearly a point (its within-mode spread ratio).
PAIRWISE_TINY = 0.1
# Below half the samples high quality, mode counts rest on a minority of the samples.
HIGH_QUALITY_LOW = 0.5
# A quarter of the samples a faithful generator would place in its modes fall outside them.
QUALITY_SHARE_LOW = 0.75
# Modes missing beyond sampling chance: at least one, and at least 3 sd of the coverage a faithful
# generator would reach with as many samples.
MISSING_MODES_SDS = 3.0
# Samples spread less than half as far as the data inside their modes (a quarter of the variance).
DISPERSION_LOW = 0.5
# Realistic samples (precision at least this share of a faithful generator's at equal n) that
# cover less than this share of what a faithful generator covers (coverage, Naeem et al. 2020):
# a fifth of the data's variety is missing, though every sample looks right.
SHARE_LOW = 0.8
# Twice the chance rate of a faithful generator (the calibration quantile), and 3 sd above it
# (sd of a proportion of mutually-nearest pairs: sqrt(2 q (1 - q) / n)).
CHANCE_FACTOR = 2.0
SIGNIFICANCE_SDS = 3.0
# Meehan et al.'s C_T: averaged per-cell Z scores of the U test; below -3 the generated samples are
# closer to the training data than held-out data are, beyond chance.
COPY_Z = -3.0


def get(d: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def modes_missing(f: Mapping[str, Any]) -> bool | None:
    total, covered, expected = f.get("modes_total"), f.get("modes_covered"), f.get("modes_expected")
    if total is None or covered is None or expected is None:
        return None
    short = expected - covered >= max(1.0, MISSING_MODES_SDS * (f.get("modes_expected_sd") or 0.0))
    # or a mode far short of what a faithful generator all but surely gives it (coverage.short_modes),
    # or the rows outside every cluster, or a region of them (a cell there), as short of its share
    return short or bool(f.get("modes_short")) or bool(f.get("outside_short")) or bool(f.get("outside_cells_short"))


def above_chance(rate: float | None, quantile: float | None, n: int | None) -> bool:
    """``rate`` beyond twice the chance ``quantile`` and 3 sd above it (pairs of mutual neighbours)."""
    if rate is None or quantile is None or not n:
        return False
    sd = math.sqrt(2 * quantile * (1 - quantile) / n)
    return rate >= CHANCE_FACTOR * quantile and rate >= quantile + SIGNIFICANCE_SDS * sd


class Findings:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, dict[str, Any]]] = []

    def add(self, verdict: str, text: str, **evidence: Any) -> None:
        self.items.append((verdict, text, evidence))


def collapse(f: Mapping[str, Any], out: Findings) -> None:
    """Nearly all samples the same, at the data's scale. One mode covered with the data's spread
    inside it is not that: where modes are far apart next to their width, it is modes missing
    (``partial_collapse``); on ring8 or grid25 one mode is a speck of the data and this fires."""
    total, covered = f.get("modes_total"), f.get("modes_covered")
    ratio = f.get("pairwise_distance_ratio")
    if ratio is not None and ratio <= PAIRWISE_TINY:
        out.add(
            "complete_collapse",
            f"generated samples lie {ratio:.3g} times as far apart as real ones (collapse below {PAIRWISE_TINY})"
            + (f"; {covered} of {total} modes covered" if total is not None and covered is not None else ""),
            pairwise_distance_ratio=ratio,
            threshold=PAIRWISE_TINY,
            modes_covered=covered,
            modes_total=total,
            high_quality_fraction=f.get("high_quality_fraction"),
        )


def partial(f: Mapping[str, Any], out: Findings, reliable: bool, missing: bool | None) -> None:
    total, covered = f.get("modes_total"), f.get("modes_covered")
    if reliable and missing:
        out.add(
            "partial_collapse",
            f"{covered} of {total} modes covered; a faithful generator would cover {f['modes_expected']:.1f} with as many samples"
            + short_modes_text(f),
            modes_covered=covered,
            modes_total=total,
            modes_expected=f.get("modes_expected"),
            modes_expected_sd=f.get("modes_expected_sd"),
            modes_short=f.get("modes_short"),
            high_quality_fraction=f.get("high_quality_fraction"),
            mode_kl=f.get("mode_kl"),
            outside_share=f.get("outside_share"),
            outside_share_real=f.get("outside_share_real"),
            outside_short=f.get("outside_short"),
            outside_cells=f.get("outside_cells"),
            outside_cells_short=f.get("outside_cells_short"),
            outside_cells_short_share=f.get("outside_cells_short_share"),
        )
    if total is None and f.get("ndb_significant"):
        out.add(
            "partial_collapse",
            f"{f['ndb']} of {f.get('ndb_bins')} NDB bins differ significantly (chance level {f.get('ndb_false_positive_bound', 0):.1f})",
            ndb=f["ndb"],
            ndb_k=f.get("ndb_k"),
            ndb_js=f.get("ndb_js"),
            ndb_false_positive_bound=f.get("ndb_false_positive_bound"),
        )


def inside(f: Mapping[str, Any], out: Findings) -> None:
    disp, se = f.get("dispersion_ratio"), f.get("dispersion_se_log")
    where = "modes" if f.get("modes_total") is not None else "clusters"
    if disp is not None and disp < DISPERSION_LOW and (se is None or math.log(max(disp, 1e-300)) + SIGNIFICANCE_SDS * se < 0):
        out.add(
            "intra_mode_collapse",
            f"inside their {where} the samples spread {disp:.2f} times as far as the data do (below {DISPERSION_LOW})",
            dispersion_ratio=disp,
            dispersion_se_log=se,
            dispersion_modes=f.get("dispersion_modes"),
            threshold=DISPERSION_LOW,
        )
    elif f.get("dispersion_min") is not None and f["dispersion_min"] < PAIRWISE_TINY:
        out.add(
            "intra_mode_collapse",
            f"mode {f.get('dispersion_min_mode')} is reduced to nearly one point (spread {f['dispersion_min']:.3g} of the data's)",
            dispersion_min=f["dispersion_min"],
            dispersion_min_mode=f.get("dispersion_min_mode"),
            threshold=PAIRWISE_TINY,
        )
    coverage, faithful = f.get("evaluate_coverage"), f.get("evaluate_coverage_faithful")
    precision, precision_faithful = f.get("evaluate_precision"), f.get("evaluate_precision_faithful")
    if (
        coverage is not None
        and faithful
        and precision is not None
        and precision_faithful
        and precision >= SHARE_LOW * precision_faithful
        and coverage < SHARE_LOW * faithful
    ):
        out.add(
            "intra_mode_collapse",
            f"realistic samples (precision {precision:.2f}, a faithful generator {precision_faithful:.2f}) cover only "
            f"{coverage / faithful:.0%} of the real variety a faithful generator covers (coverage {coverage:.2f} against {faithful:.2f})",
            coverage=coverage,
            coverage_faithful=faithful,
            precision=precision,
            precision_faithful=precision_faithful,
            threshold=SHARE_LOW,
        )
    # all samples against held-out data; and those outside every cluster against the training
    # rows there (diagnostics.outside), whose scale the data's tight clusters do not set
    for key, samples, real in (
        ("", "generated samples", "real data"),
        ("outside_", "the samples outside every cluster", "the training rows there"),
    ):
        rate, q, z = f.get(f"{key}duplicate_rate"), f.get(f"{key}duplicate_quantile"), f.get(f"{key}duplicate_z")
        # and beyond what the real control half scored at this threshold: with a few dozen points the
        # threshold itself is noisy (a part's 71 held-out points: real data 14 %, against 5 % chance)
        if above_chance(rate, q, f.get(f"{key}duplicate_points")) and (z is None or z >= SIGNIFICANCE_SDS):
            out.add(
                "intra_mode_collapse",
                f"{rate:.1%} of {samples} have {copies_text(f.get(f'{key}duplicate_neighbour'))}, where {real} of the same size have "
                f"{f.get(f'{key}real_duplicate_rate'):.1%} (chance: {q:.0%})",
                # (the whole data's evidence keys in their order before the outside measure came)
                **{
                    f"{key}{name}": f.get(f"{key}{name}")
                    for name in ("duplicate_rate", "real_duplicate_rate", "duplicate_quantile", "duplicate_points", "duplicate_neighbour")
                },
            )


def vanishing(dynamics: Mapping[str, Any] | None, out: Findings) -> None:
    van = get(dynamics, "vanishing_gradients")
    if get(van, "flag"):
        out.add(
            "vanishing_gradients",
            f"D(G(z)) ended at {van['d_fake_late']:.3g} and the generator's gradient norm fell to "
            f"{van['grad_ratio']:.3g} of its peak (collapse below {van['ratio_threshold']})" + in_part(van),
            d_fake_late=van["d_fake_late"],
            grad_ratio=van["grad_ratio"],
            grad_norm_g_late_median=van["grad_norm_g_late_median"],
            grad_norm_g_reference_median=van["grad_norm_g_reference_median"],
        )


def copying(f: Mapping[str, Any], out: Findings) -> None:
    c_t, rate, q = f.get("copy_c_t"), f.get("copy_rate"), f.get("copy_quantile")
    if c_t is not None and c_t < COPY_Z and above_chance(rate, q, f.get("n_samples")):
        out.add(
            "data_copying",
            f"generated samples sit closer to training points than held-out data do (C_T = {c_t:.1f}, below {COPY_Z:g}); "
            f"{rate:.1%} of them are closer than {q:.0%} of held-out points are"
            + (f", {f['copy_exact_share']:.1%} exact copies" if f.get("copy_exact_share") else ""),
            copy_c_t=c_t,
            copy_rate=rate,
            copy_quantile=q,
            copy_exact_share=f.get("copy_exact_share"),
        )


def overfitting(dynamics: Mapping[str, Any] | None, out: Findings) -> None:
    m = get(dynamics, "discriminator_overfitting")
    if get(m, "flag"):
        auc = "" if m.get("auc") is None else f"AUC of its logits, training against held-out, {m['auc']:.2f}"

        def ranks() -> str:  # the AUC's finding (its figures exist only where it found D)
            return (
                f"D ranks its training examples above held-out real ones ({auc}, z = {m['z_auc']:.1f}; "
                f"{m['auc_threshold']:.2f} or more means that at some threshold it calls a tenth more of its own examples real"
            )

        if m.get("gap") is None:  # a critic without a decision boundary: the AUC alone
            text = f"{ranks()}; this critic has no threshold of its own, so no share is called real)"
        elif m.get("flagged_by") == "auc":  # D's threshold hides the separation its logits show
            train, held = f"{m['called_real_train']:.1%}", f"{m['called_real_heldout']:.1%}"
            text = (
                f"{ranks()}), "
                f"though at its own threshold it calls {train} of training examples real and {held} of held-out ones "
                f"(gap {m['gap']:.2f}; r_t on the training data {m['r_t_train']:.2f})"
            )
        else:
            train, held = f"{m['called_real_train']:.1%}", f"{m['called_real_heldout']:.1%}"
            text = (
                f"D calls {train} of training examples real but {held} of held-out real ones (gap {m['gap']:.2f}, z = {m['z']:.1f}; "
                f"r_t on the training data {m['r_t_train']:.2f}" + (f"; {auc}" if auc else "") + ")"
            )
        out.add(
            "discriminator_overfitting",
            text,
            called_real_train=m["called_real_train"],
            called_real_heldout=m["called_real_heldout"],
            gap=m["gap"],
            z=m["z"],
            r_t_train=m["r_t_train"],
            z_auc=m.get("z_auc"),
            flagged_by=m.get("flagged_by"),
            auc=m.get("auc"),
        )


def quality_floor(f: Mapping[str, Any]) -> float:
    """``HIGH_QUALITY_LOW`` of what held-out real data score under the same protocol, when known:
    real data themselves may fall short of 50 % (a domain classifier over many classes that is
    rarely 90 % sure), and a faithful generator then looked unconverged and its modes unjudged."""
    real_hq = f.get("high_quality_real")
    return HIGH_QUALITY_LOW * real_hq if real_hq is not None else HIGH_QUALITY_LOW


def quality_shortfall(f: Mapping[str, Any]) -> str | None:
    """Why the samples are too poor to be judged converged: ``"floor"`` (below :func:`quality_floor`),
    ``"share"`` (below ``QUALITY_SHARE_LOW`` of held-out real data's), or None."""
    hq, real_hq = f.get("high_quality_fraction"), f.get("high_quality_real")
    if hq is None:
        return None
    if hq < quality_floor(f):
        return "floor"
    return "share" if real_hq and hq < QUALITY_SHARE_LOW * real_hq else None


def convergence(f: Mapping[str, Any], dynamics: Mapping[str, Any] | None, out: Findings) -> None:
    hq, total, covered, real_hq = f.get("high_quality_fraction"), f.get("modes_total"), f.get("modes_covered"), f.get("high_quality_real")
    floor, shortfall = quality_floor(f), quality_shortfall(f)
    if shortfall == "floor":
        text = f"only {hq:.1%} of samples are high quality (below {floor:.0%}" + (
            f", half of held-out real data's {real_hq:.1%})" if real_hq is not None else ")"
        )
        if total is not None and covered is not None:
            text += f"; {covered} of {total} modes covered"
        out.add("not_converged", text, high_quality_fraction=hq, threshold=floor, modes_covered=covered, modes_total=total)
    elif shortfall == "share":
        out.add(
            "not_converged",
            f"{hq:.1%} of samples are high quality, against {real_hq:.1%} of held-out real data (below {QUALITY_SHARE_LOW:.0%} of it): "
            "the samples are too spread or blurred",
            high_quality_fraction=hq,
            high_quality_real=real_hq,
            threshold=QUALITY_SHARE_LOW,
        )
    eq = get(dynamics, "equilibrium")
    if get(eq, "far_flag"):
        out.add(
            "not_converged",
            f"the discriminator is far from the 1/2 equilibrium: D(x) = {eq['d_real_mean']:.3g}, D(G(z)) = {eq['d_fake_mean']:.3g}",
            d_real_mean=eq["d_real_mean"],
            d_fake_mean=eq["d_fake_mean"],
            far_tolerance=eq["far_tolerance"],
        )
    osc = get(dynamics, "oscillation")
    if get(osc, "flag"):
        out.add(
            "not_converged",
            f"D(G(z)) oscillates late in training (detrended std {osc['detrended_std']:.3g}, {osc['sign_changes']} sign changes)"
            + in_part(osc),
            detrended_std=osc["detrended_std"],
            sign_changes=osc["sign_changes"],
        )
