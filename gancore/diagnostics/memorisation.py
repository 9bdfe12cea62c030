"""A discriminator that memorises its training data: the signal ADA steers by, and its proof on
held-out data.

D's verdict "real" (its output above the loss's decision boundary: 0 for a logistic or hinge D, 0.5
for least squares; :func:`gancore.losses.boundary`) is counted on training examples and on held-out real examples of
the same distribution. A D that generalises calls both real equally often; one that memorised the
training set calls its own examples real far more often (Karras et al. 2020 watch
``r_t = E[sign D(x_train)]``; the held-out gap is what makes it evidence rather than a guess).
Measured on clean (unaugmented) data, with packed inputs for a packing D, on equal numbers of
each, in the coordinates D was trained in (a mixture: each part's D on its own part, pooled).

The gap counts calls at D's threshold, so it under-reads a D that calls nearly all (or nearly no)
real data real: the two shares are squeezed together however far D separates them. Beside it, the
AUC of D's logits, training against held-out examples (the chance that a training example scores
above a held-out one, ties half; 0.5 when D cannot tell them apart, 1 when it ranks every training
example first), which does not depend on the threshold. It reads on the gap's scale:
``AUC - 1/2 = E_train[F_heldout(t) - F_train(t)]`` (t a training example's logit, F the two
logit distributions counting ties half), an average of the share gaps D shows at thresholds
placed at its training logits, so it cannot exceed the largest of them. An AUC of at least
``1/2 + GAP`` therefore guarantees, on the measured examples, a threshold at which D calls at least
a tenth more of its training examples real than of held-out ones (for a mixture, some part's D,
since the pooled AUC is a weighted mean of the parts'): sufficient for the gap's finding at D's
best threshold, not equivalent to it. A Wasserstein critic has no boundary (its loss is the same
with a constant added to its output): it gets the AUC alone, and no share or r_t.

The finding: the gap is at least ``GAP`` (a tenth of the examples) and significant (two-proportion
z at least 3), or the AUC is at least ``1/2 + GAP`` and significant (Mann-Whitney z at least 3,
the variance without ties, which ties only lower). The remedy is augmentation, with its settings.

A run whose augmentation was steered by held-out examples (``augment.signal: held_out``) consulted
the even-indexed half of the test split (:mod:`gancore.heldout`); its D is measured on the other
half, which training never saw in any form, so the gap is not read off the set p was tuned on.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from gancore.data.prepared import PreparedData, to_model_range
from gancore.diagnostics.ndb import proportion_z
from gancore.heldout import MEMORISATION_GAP, held_out_steers, measured_half
from gancore.seeds import subset

GAP = MEMORISATION_GAP
SIGNIFICANCE_Z = 3.0
MAX_POINTS = 5000


@torch.no_grad()
def _logits(discriminator: torch.nn.Module, x: torch.Tensor, pack: int, batch: int = 500) -> torch.Tensor:
    """D's logit for every packed group of ``pack`` examples, on the CPU; the examples (stored on
    the CPU) go to D's device a chunk at a time."""
    device = next(itertools.chain(discriminator.parameters(), discriminator.buffers()), torch.empty(0)).device
    x = x[: len(x) // pack * pack]
    out = []
    for start in range(0, len(x), batch * pack):
        chunk = to_model_range(x[start : start + batch * pack].to(device))
        packed = chunk.reshape(len(chunk) // pack, pack * chunk.shape[1], *chunk.shape[2:]) if pack > 1 else chunk
        out.append(discriminator(packed).reshape(-1).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def ranked_pairs(first: torch.Tensor, second: torch.Tensor) -> float:
    """Pairs (a, b), a from ``first`` and b from ``second``, with a > b, ties counted half: the
    Mann-Whitney U of ``first``; divided by ``len(first) * len(second)``, the AUC. NaN if a logit
    is NaN (a diverged D ranks nothing; sorting would place NaNs last and read as memorising)."""
    if first.isnan().any() or second.isnan().any():
        return float("nan")
    ordered = second.double().sort().values
    a = first.double()
    below = torch.searchsorted(ordered, a, right=False).double()
    at_or_below = torch.searchsorted(ordered, a, right=True).double()
    return float((below + 0.5 * (at_or_below - below)).sum())


def counts(
    discriminator: torch.nn.Module, data: PreparedData, pack: int, seed: int, steered: bool = False, boundary: float | None = 0.0
) -> dict[str, float]:
    """Called-real counts and r_t sums at D's decision ``boundary`` (none without one), and ranked
    pairs, on equal subsets of training and held-out data (``steered``: the held-out half
    training did not consult)."""
    held_out = measured_half(data.test) if steered else data.test
    n = min(MAX_POINTS, len(data.train), len(held_out))
    train = subset(data.train, n, seed, "diagnose/memorisation-train")
    test = subset(held_out, n, seed, "diagnose/memorisation-test")
    l_train, l_test = _logits(discriminator, train, pack), _logits(discriminator, test, pack)
    out = {"n_train": len(l_train), "n_test": len(l_test), "ranked_pairs": ranked_pairs(l_train, l_test)}
    if boundary is not None:
        out.update(
            real_train=float((l_train > boundary).sum()),
            real_test=float((l_test > boundary).sum()),
            sign_train=float(torch.sign(l_train - boundary).sum()),
            sign_test=float(torch.sign(l_test - boundary).sum()),
        )
    return out


def summarise(parts: list[dict[str, float]]) -> dict[str, Any] | None:
    """The pooled figures and the finding from :func:`counts` of one D or of every part's."""
    n1, n2 = sum(c["n_train"] for c in parts), sum(c["n_test"] for c in parts)
    if not n1 or not n2:
        return None
    p1 = p2 = z = gap = r_train = r_test = None
    if all("real_train" in c for c in parts):  # D has a decision boundary
        p1, p2 = sum(c["real_train"] for c in parts) / n1, sum(c["real_test"] for c in parts) / n2
        z = proportion_z(p1, int(n1), p2, int(n2))
        gap = p1 - p2
        r_train, r_test = sum(c["sign_train"] for c in parts) / n1, sum(c["sign_test"] for c in parts) / n2
    auc = z_auc = left_out = None
    if all("ranked_pairs" in c for c in parts):  # counts from before the AUC have none
        # A diverged D's NaN logits rank nothing: its part is left out, and alone it leaves a NaN.
        finite = [c for c in parts if math.isfinite(c["ranked_pairs"])]
        left_out = len(parts) - len(finite) or None
        if finite:
            # Within each part (a mixture's Ds are not on one scale): pooled pairs over pooled pairs,
            # and the pooled Mann-Whitney statistic against its mean and variance with no difference.
            pairs = sum(c["n_train"] * c["n_test"] for c in finite)
            u = sum(c["ranked_pairs"] for c in finite)
            variance = sum(c["n_train"] * c["n_test"] * (c["n_train"] + c["n_test"] + 1) / 12 for c in finite)
            auc = u / pairs
            z_auc = (u - pairs / 2) / math.sqrt(variance) if variance > 0 else None
        else:
            auc = float("nan")
    by_gap = gap is not None and z is not None and gap >= GAP and z >= SIGNIFICANCE_Z
    by_auc = auc is not None and z_auc is not None and auc >= 0.5 + GAP and z_auc >= SIGNIFICANCE_Z
    return {
        "called_real_train": p1,
        "called_real_heldout": p2,
        "gap": gap,
        "z": z,
        "r_t_train": r_train,
        "r_t_heldout": r_test,
        "n": n1,
        "auc": auc,
        "z_auc": z_auc,
        "auc_parts_left_out": left_out,
        "gap_threshold": GAP,
        "auc_threshold": 0.5 + GAP,
        "flag": bool(by_gap or by_auc),
        # Which reading found it: the share gap at D's threshold, or the AUC alone (D's threshold
        # hides a separation its logits show).
        "flagged_by": "gap" if by_gap else ("auc" if by_auc else None),
    }


def measure(params: Any, layout: Any, device: Any) -> dict[str, Any] | None:
    """The figures for the trained model in ``layout`` (a single GAN or a mixture), or None when
    there is no discriminator to ask."""
    from gancore.data.prepared import load_prepared
    from gancore.io import read_json
    from gancore.losses import boundary
    from gancore.modelio import load_discriminator, read_model_file

    if layout.mixture.is_file():
        trained = [layout.part(int(part["index"])) for part in read_json(layout.mixture)["parts"]]
    else:
        trained = [layout]
    found, foreign = [], 0
    for each in trained:
        if not each.discriminator.is_file():
            continue
        data = load_prepared(each.prepared)
        if data.meta.get("own_test") is False:
            # No held-out example falls in this part: its test split is other parts' data, which
            # its D tells apart from its own whether it memorises or not.
            foreign += 1
            continue
        pack = int(read_model_file(each.discriminator).get("pack", 1))
        D = load_discriminator(each.discriminator, device)
        found.append(counts(D, data, pack, params.seed, held_out_steers(params), boundary(params.loss.name)))
    result = summarise(found) if found else None
    if result is not None and foreign:
        result["parts_without_held_out"] = foreign
    return result
