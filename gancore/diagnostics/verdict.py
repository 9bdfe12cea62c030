"""One verdict from the diagnostic figures, with its evidence, an explanation and remedies.

Precedence (the first that holds wins; the others are still listed under ``findings``):

1. ``complete_collapse`` -- nearly all samples the same: generated samples spread over less than
   ``PAIRWISE_TINY`` of the real data's mean pairwise distance (one mode of ring8 is that; one of
   two wide clusters, covered with its full spread, is modes missing, ``partial_collapse``).
2. ``vanishing_gradients`` -- D(G(z)) near 0 while the generator's gradient norm collapsed (the
   training-log check of :mod:`gancore.diagnostics.dynamics`).
3. ``partial_collapse`` -- modes missing: fewer modes covered than a faithful generator would cover
   with as many counted samples, by at least max(1, 3 sd); where the data have no known modes,
   an NDB above its chance level (alpha K + 3 sd).
4. ``intra_mode_collapse`` -- the samples inside the modes differ too little (the design notes'
   "samples that differ little"): their spread within modes is below ``DISPERSION_LOW`` of the
   data's (significantly), or one mode is reduced to nearly a point (below ``PAIRWISE_TINY``), or
   near duplicates exceed twice their chance rate (:mod:`gancore.diagnostics.diversity`: each
   measure calibrated on real data, so a faithful generator sits at chance), or (when evaluate
   ran) realistic samples cover less than ``SHARE_LOW`` of the variety a faithful generator covers
   (coverage against training examples in the samples' place, at equal n).
5. ``data_copying`` -- the generator reproduces its training data: generated samples lie closer to
   training points than held-out real points do (Meehan et al.'s C_T below ``COPY_Z``) and more
   than twice the chance share of them lie closer than the held-out data's low quantile.
6. ``discriminator_overfitting`` -- D memorises its training data: it calls training examples
   real a tenth more often than held-out real ones, significantly, or its logits rank training
   examples above held-out ones with an AUC of at least 0.6, significantly (which proves such a
   tenth at some threshold: :mod:`gancore.diagnostics.memorisation`); the remedy is augmentation.
7. ``not_converged`` -- high-quality fraction below ``HIGH_QUALITY_LOW`` (of held-out real data's,
   when known), or below
   ``QUALITY_SHARE_LOW`` of what held-out real data score under the same protocol (samples too
   wide, blurred), or the discriminator far from the 1/2 equilibrium (sigmoid losses), or D(G(z))
   oscillating.
8. ``healthy``.

Deliberate readings of that order:

* Mode counts are judged only when at least ``HIGH_QUALITY_LOW`` of the samples are high quality
  (of the share held-out real data reach, when known).
  Coverage counts high-quality samples only, so when nearly none are (noise, an untrained
  generator) a low count says the generator has not learned the data, not that it dropped modes:
  such a run falls through to ``not_converged`` (its mode counts stay in the findings).
* NDB counts partial collapse only for data without known modes. Its K bins (100 by default) are
  much finer than 8 or 25 modes, so with known modes it reacts to every mismatch of shape inside
  a mode, which the dispersion ratio, the near-duplicate rate and the high-quality share measure
  in the modes' own terms (too tight, repeated, too wide). It is reported in the evidence either way.

The conditions and their thresholds are in :mod:`gancore.diagnostics.findings`; the remedies
come from every finding, ordered by cause (:mod:`gancore.diagnostics.remedies`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gancore.diagnostics.findings import (
    Findings,
    collapse,
    convergence,
    copying,
    get,
    inside,
    modes_missing,
    overfitting,
    partial,
    quality_floor,
    quality_shortfall,
    vanishing,
)
from gancore.diagnostics.remedies import plan
from gancore.diagnostics.verdict_text import HEADLINES, healthy_text

VERDICTS = (
    "healthy",
    "partial_collapse",
    "complete_collapse",
    "intra_mode_collapse",
    "data_copying",
    "discriminator_overfitting",
    "vanishing_gradients",
    "not_converged",
)
# Precedence of the non-healthy verdicts, most severe first.
RANKED = (
    "complete_collapse",
    "vanishing_gradients",
    "partial_collapse",
    "intra_mode_collapse",
    "data_copying",
    "discriminator_overfitting",
    "not_converged",
)


def decide(
    figures: Mapping[str, Any], dynamics: Mapping[str, Any] | None = None, loss: str | None = None, context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Apply the precedence above to ``figures`` (the flat numbers of ``diagnose.json``) and ``dynamics``.

    Returns ``verdict``, ``evidence`` (the numbers behind the verdict), ``explanation``,
    ``remedies`` (texts, with their settings), ``remedy_settings`` and ``findings`` (every
    condition that held, in precedence order). ``context``: what the remedies' settings depend on
    (:func:`gancore.diagnostics.remedies.plan`).
    """
    f = figures
    hq = f.get("high_quality_fraction")
    # (real data the classifier is never sure of: the protocol covers nothing, mode counts say nothing)
    reliable = f.get("modes_total") is not None and hq is not None and hq >= quality_floor(f) and f.get("high_quality_real") != 0
    missing = modes_missing(f)
    out = Findings()
    collapse(f, out)
    vanishing(dynamics, out)
    partial(f, out, reliable, missing)
    within = Findings()
    inside(f, within)
    out.items += within.items
    # Samples mostly below the quality the data reach (blurred, too wide): their spread inside the
    # modes rests on the few that pass, so it is a finding beside not_converged, never the verdict
    # (blurred MNIST digits, 11 % high quality against 92 %, were intra_mode_collapse).
    demoted = within.items if quality_shortfall(f) else []
    copying(f, out)
    overfitting(dynamics, out)
    convergence(f, dynamics, out)

    findings = out.items
    eq = get(dynamics, "equilibrium")
    if findings:
        choosable = [x for x in findings if x not in demoted] or findings
        verdict = min(choosable, key=lambda x: RANKED.index(x[0]))[0]
        primary = [x for x in choosable if x[0] == verdict]
        evidence: dict[str, Any] = {}
        for _, _, ev in primary:
            evidence.update(ev)
        others = [x[1] for x in findings if x not in primary]
        explanation = HEADLINES[verdict] + " " + "; ".join(t for _, t, _ in primary) + "."
        if others:
            explanation += " Also: " + "; ".join(others) + "."
    else:
        verdict = "healthy"
        keys = ("modes_covered", "modes_total", "high_quality_fraction", "mode_kl", "pairwise_distance_ratio", "dispersion_ratio")
        evidence = {k: f.get(k) for k in (*keys, "duplicate_rate", "copy_c_t", "ndb", "ndb_k")}
        evidence["equilibrium"] = get(eq, "flag")
        explanation = healthy_text(f, eq)
    remedies = plan([verdict, *(v for v, _, _ in findings)], loss, dynamics, context or {})
    return {
        "verdict": verdict,
        "evidence": evidence,
        "explanation": explanation,
        "remedies": [r.described() for r in remedies],
        "remedy_settings": [r.setting() for r in remedies],
        "findings": [{"verdict": v, "text": t} for v, t, _ in findings],
    }
