"""One verdict from the diagnostic figures, with its evidence, an explanation and remedies.

Precedence (the first that holds wins; the others are still listed under ``findings``):

1. ``complete_collapse`` -- nearly all samples the same: generated samples spread over less than
   ``PAIRWISE_TINY`` of the real data's mean pairwise distance, or more than
   ``DUPLICATE_EXCESS_HIGH`` of them have a near twin beyond what the real data has, or (where the
   mode counts are reliable, see below) at most one mode covered where a faithful generator would
   cover several.
2. ``vanishing_gradients`` -- D(G(z)) near 0 while the generator's gradient norm collapsed (the
   training-log check of :mod:`gancore.diagnostics.dynamics`).
3. ``partial_collapse`` -- modes missing: fewer modes covered than a faithful generator would cover
   with as many counted samples, by at least max(1, 3 sd); where the data have no known modes,
   an NDB above its chance level (alpha K + 3 sd).
4. ``not_converged`` -- high-quality fraction below ``HIGH_QUALITY_LOW``, or the discriminator far
   from the 1/2 equilibrium (sigmoid losses), or D(G(z)) oscillating.
5. ``healthy``.

Two deliberate readings of that order:

* Mode counts are judged only when at least ``HIGH_QUALITY_LOW`` of the samples are high quality.
  Coverage counts high-quality samples only, so when nearly none are (noise, an untrained
  generator) a low count says the generator has not learned the data, not that it dropped modes:
  such a run falls through to ``not_converged`` (its mode counts stay in the findings).
* NDB counts partial collapse only for data without known modes. Its K bins (100 by default) are
  much finer than 8 or 25 modes, so with known modes it also reacts to every mismatch of shape
  inside a mode (a Gaussian a little too wide), which is quality, not a missing mode. It is
  reported in the evidence either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VERDICTS = ("healthy", "partial_collapse", "complete_collapse", "vanishing_gradients", "not_converged")

# A tenth of the real spread: collapsing ring8 onto one mode gives ~0.01, onto two neighbouring
# modes ~0.3, so 0.1 separates "one point" from "few modes".
PAIRWISE_TINY = 0.1
# More than half the samples have a near twin that the real data would not explain.
DUPLICATE_EXCESS_HIGH = 0.5
# Below half the samples high quality, mode counts rest on a minority of the samples.
HIGH_QUALITY_LOW = 0.5
# Modes missing beyond sampling chance: at least one, and at least 3 sd of the coverage a faithful
# generator would reach with as many samples.
MISSING_MODES_SDS = 3.0

PACKING = "packing (PacGAN): let the discriminator judge several samples jointly, so a lack of diversity becomes visible to it"
SEPARATE = "train separate GANs for different modes (e.g. one per class) and mix their samples"
DIVERSE = "train on more diverse data"
NON_SATURATING = "use the non-saturating generator loss -log D(G(z)) (loss.name=non_saturating), whose gradient does not vanish when D rejects the samples"
WASSERSTEIN = "use a Wasserstein loss (loss.name=wasserstein_gp): the critic's gradients do not saturate"
NORMALISATION = "normalisation such as batch normalisation in the generator, against internal covariate shift"
LONGER = "train for more steps (train.steps) and compare the dynamics plot: D(x) and D(G(z)) should approach 1/2"


def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _modes_missing(f: Mapping[str, Any]) -> bool | None:
    total, covered, expected = f.get("modes_total"), f.get("modes_covered"), f.get("modes_expected")
    if total is None or covered is None or expected is None:
        return None
    return expected - covered >= max(1.0, MISSING_MODES_SDS * (f.get("modes_expected_sd") or 0.0))


def decide(
    figures: Mapping[str, Any], dynamics: Mapping[str, Any] | None = None, loss: str | None = None, context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Apply the precedence above to ``figures`` (the flat numbers of ``diagnose.json``) and ``dynamics``.

    Returns ``verdict``, ``evidence`` (the numbers behind the verdict), ``explanation``,
    ``remedies`` and ``findings`` (every condition that held, in precedence order).
    """
    f = figures
    hq = f.get("high_quality_fraction")
    total, covered = f.get("modes_total"), f.get("modes_covered")
    reliable = total is not None and hq is not None and hq >= HIGH_QUALITY_LOW
    missing = _modes_missing(f)
    ratio, dup_excess = f.get("pairwise_distance_ratio"), f.get("duplicate_excess")

    findings: list[tuple[str, str, dict[str, Any]]] = []

    def found(verdict: str, text: str, **evidence: Any) -> None:
        findings.append((verdict, text, evidence))

    # 1. complete collapse
    if ratio is not None and ratio <= PAIRWISE_TINY:
        found(
            "complete_collapse",
            f"generated samples lie {ratio:.3g} times as far apart as real ones (collapse below {PAIRWISE_TINY})",
            pairwise_distance_ratio=ratio,
            threshold=PAIRWISE_TINY,
        )
    if dup_excess is not None and dup_excess >= DUPLICATE_EXCESS_HIGH:
        found(
            "complete_collapse",
            f"{f.get('duplicate_rate'):.1%} of generated samples have a near duplicate (real data: {f.get('real_duplicate_rate'):.1%})",
            duplicate_rate=f.get("duplicate_rate"),
            real_duplicate_rate=f.get("real_duplicate_rate"),
            duplicate_excess=dup_excess,
            threshold=DUPLICATE_EXCESS_HIGH,
        )
    if reliable and total is not None and covered is not None and total > 1 and covered <= 1 and missing:
        found(
            "complete_collapse",
            f"only {covered} of {total} modes covered",
            modes_covered=covered,
            modes_total=total,
            modes_expected=f.get("modes_expected"),
            high_quality_fraction=hq,
        )
    # 2. vanishing gradients
    van = _get(dynamics, "vanishing_gradients")
    if _get(van, "flag"):
        found(
            "vanishing_gradients",
            f"D(G(z)) ended at {van['d_fake_late']:.3g} and the generator's gradient norm fell to "
            f"{van['grad_ratio']:.3g} of its peak (collapse below {van['ratio_threshold']})",
            d_fake_late=van["d_fake_late"],
            grad_ratio=van["grad_ratio"],
            grad_norm_g_late_median=van["grad_norm_g_late_median"],
            grad_norm_g_reference_median=van["grad_norm_g_reference_median"],
        )
    # 3. partial collapse
    if reliable and missing:
        found(
            "partial_collapse",
            f"{covered} of {total} modes covered; a faithful generator would cover {f['modes_expected']:.1f} with as many samples",
            modes_covered=covered,
            modes_total=total,
            modes_expected=f.get("modes_expected"),
            modes_expected_sd=f.get("modes_expected_sd"),
            high_quality_fraction=hq,
            mode_kl=f.get("mode_kl"),
        )
    if total is None and f.get("ndb_significant"):
        found(
            "partial_collapse",
            f"{f['ndb']} of {f.get('ndb_bins')} NDB bins differ significantly (chance level {f.get('ndb_false_positive_bound', 0):.1f})",
            ndb=f["ndb"],
            ndb_k=f.get("ndb_k"),
            ndb_js=f.get("ndb_js"),
            ndb_false_positive_bound=f.get("ndb_false_positive_bound"),
        )
    # 4. not converged
    if hq is not None and hq < HIGH_QUALITY_LOW:
        text = f"only {hq:.1%} of samples are high quality (below {HIGH_QUALITY_LOW:.0%})"
        if total is not None and covered is not None:
            text += f"; {covered} of {total} modes covered"
        found("not_converged", text, high_quality_fraction=hq, threshold=HIGH_QUALITY_LOW, modes_covered=covered, modes_total=total)
    eq = _get(dynamics, "equilibrium")
    if _get(eq, "far_flag"):
        found(
            "not_converged",
            f"the discriminator is far from the 1/2 equilibrium: D(x) = {eq['d_real_mean']:.3g}, D(G(z)) = {eq['d_fake_mean']:.3g}",
            d_real_mean=eq["d_real_mean"],
            d_fake_mean=eq["d_fake_mean"],
            far_tolerance=eq["far_tolerance"],
        )
    osc = _get(dynamics, "oscillation")
    if _get(osc, "flag"):
        found(
            "not_converged",
            f"D(G(z)) oscillates late in training (detrended std {osc['detrended_std']:.3g}, {osc['sign_changes']} sign changes)",
            detrended_std=osc["detrended_std"],
            sign_changes=osc["sign_changes"],
        )

    if findings:
        rank = {v: i for i, v in enumerate(("complete_collapse", "vanishing_gradients", "partial_collapse", "not_converged"))}
        verdict = min(findings, key=lambda x: rank[x[0]])[0]
        primary = [x for x in findings if x[0] == verdict]
        evidence: dict[str, Any] = {}
        for _, _, ev in primary:
            evidence.update(ev)
        others = [text for v, text, _ in findings if v != verdict]
        explanation = _HEADLINES[verdict] + " " + "; ".join(t for _, t, _ in primary) + "."
        if others:
            explanation += " Also: " + "; ".join(others) + "."
    else:
        verdict = "healthy"
        evidence = {
            k: f.get(k)
            for k in (
                "modes_covered",
                "modes_total",
                "high_quality_fraction",
                "mode_kl",
                "pairwise_distance_ratio",
                "duplicate_excess",
                "ndb",
                "ndb_k",
            )
        }
        evidence["equilibrium"] = _get(eq, "flag")
        explanation = _healthy_text(f, eq)
    plan = remedy_plan(verdict, loss, dynamics, context) if context is not None else None
    return {
        "verdict": verdict,
        "evidence": evidence,
        "explanation": explanation,
        "remedies": remedies(verdict, loss, dynamics) if plan is None else [r.described() for r in plan],
        "remedy_settings": None if plan is None else [{"name": r.name, "sets": list(r.sets)} for r in plan],
        "findings": [{"verdict": v, "text": t} for v, t, _ in findings],
    }


_HEADLINES = {
    "complete_collapse": "Complete mode collapse: nearly all samples are the same.",
    "vanishing_gradients": "Vanishing generator gradients: the discriminator rejects the samples and the generator stopped learning.",
    "partial_collapse": "Partial mode collapse: some modes of the data are missing from the samples.",
    "not_converged": "Not converged: the generator has not (yet) learned the data.",
}


def _healthy_text(f: Mapping[str, Any], eq: Mapping[str, Any] | None) -> str:
    parts = []
    if f.get("modes_total") is not None:
        parts.append(f"{f.get('modes_covered')} of {f['modes_total']} modes covered")
    if f.get("high_quality_fraction") is not None:
        parts.append(f"{f['high_quality_fraction']:.1%} of samples high quality")
    if f.get("pairwise_distance_ratio") is not None:
        parts.append(f"sample spread {f['pairwise_distance_ratio']:.2f} of the real data's")
    if _get(eq, "flag"):
        parts.append("D(x) and D(G(z)) average near the 1/2 equilibrium")
    text = "Healthy: no sign of mode collapse, vanishing gradients or non-convergence"
    return text + (" (" + "; ".join(parts) + ")." if parts else ".")


def remedies(verdict: str, loss: str | None = None, dynamics: Mapping[str, Any] | None = None) -> list[str]:
    """The remedies named in the reference for ``verdict``, adapted to the loss in use."""
    if verdict in ("complete_collapse", "partial_collapse"):
        return [PACKING, SEPARATE, DIVERSE]
    if verdict == "vanishing_gradients":
        out = [] if loss == "non_saturating" else [NON_SATURATING]
        if loss != "wasserstein_gp":
            out.append(WASSERSTEIN)
        return out + [NORMALISATION]
    if verdict == "not_converged":
        out = [LONGER]
        bn = _get(dynamics, "bn_drift")
        if dynamics is not None and (bn is None or bn.get("flag")):
            # No BN in the generator (no drift logged), or its statistics never settled.
            out.append(NORMALISATION)
        return out
    return []


@dataclass(frozen=True)
class Remedy:
    """A remedy, and the parameter settings (``key.path=value``, as for ``gan -S``) that apply it."""

    name: str
    text: str
    sets: tuple[str, ...] = ()

    def described(self) -> str:
        return self.text + (f" (set: {' '.join(f'-S {s}' for s in self.sets)})" if self.sets else "")


def remedy_plan(verdict: str, loss: str | None, dynamics: Mapping[str, Any] | None, context: Mapping[str, Any]) -> list[Remedy]:
    """:func:`remedies` for ``verdict`` as settings for this run (``context``: ``pack``,
    ``batch_size``, ``steps``, ``mixture``, ``modes_total``, ``kind``, ``arch_options``); a remedy
    the run already applies is left out, one without a setting (more diverse data) keeps none."""
    texts = remedies(verdict, loss, dynamics)
    pack, batch = int(context.get("pack") or 1), int(context.get("batch_size") or 0)
    plan: list[Remedy] = []
    for text in texts:
        if text == PACKING:
            for m in (2, 4):
                if pack < m:
                    sets = [f"model.pack={m}"] + ([f"train.batch_size={max(m, batch // m * m)}"] if batch % m else [])
                    plan.append(
                        Remedy(
                            f"pack{m}",
                            f"packing with {m} samples (PacGAN{m}): the discriminator judges {m} samples jointly, "
                            "so a lack of diversity becomes visible to it",
                            tuple(sets),
                        )
                    )
        elif text == SEPARATE:
            if not context.get("mixture"):
                sets = ["mixture.enabled=true"]
                if context.get("kind") == "vector" and context.get("modes_total"):
                    sets.append(f"mixture.parts={int(context['modes_total'])}")
                plan.append(Remedy("mixture", SEPARATE, tuple(sets)))
        elif text == NON_SATURATING:
            plan.append(Remedy("non_saturating", text, ("loss.name=non_saturating",)))
        elif text == WASSERSTEIN:
            plan.append(Remedy("wasserstein_gp", text, ("loss.name=wasserstein_gp", "train.n_critic=5")))
        elif text == NORMALISATION:
            if "batch_norm" in (context.get("arch_options") or ()) and not context.get("batch_norm"):
                plan.append(Remedy("batch_norm", text, ("model.options.batch_norm=true",)))
            else:
                plan.append(Remedy("normalisation", text))
        elif text == LONGER:
            plan.append(Remedy("longer", text, (f"train.steps={2 * int(context.get('steps') or 0)}",) if context.get("steps") else ()))
        else:
            plan.append(Remedy("more_data" if text == DIVERSE else "other", text))
    return plan
