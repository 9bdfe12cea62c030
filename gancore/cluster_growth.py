"""Small clusters of a large points file: the clusters the subset their count was chosen on
could not show, grown on every row.

Prepare chooses the count by BIC on 5,000 rows picked at random
(:func:`~gancore.cluster_selection.select_clusters`), where a cluster of 20 rows in 100,000 has one
row or none: the uniform background held its rows, and a generator that dropped it was told it
covered every mode. :func:`grow_on_all_rows` is the insertion step of Fraley, Raftery and Wehrens
(2005, "Incremental model-based clustering for large datasets with small clusters"): the mixture
fitted on every row gains a component where it explains the rows least
(:func:`~gancore.cluster_selection.grow_start`), and keeps it if it is such a cluster.

What is added must be a cluster the subset could not show, not finer density, which BIC on
every row keeps buying: on three lognormal clusters (50,000 rows) it added 8 components, tail
pieces of 180 to 470 rows and clumps of 5 and 10 tail rows (5 modes for 3); on one gamma-shaped
cluster (30,000) 8 more, 2 modes became 4. So a grown component is kept where

* it holds :data:`~gancore.gaussian_mixture.POINT_MASS_ROWS` rows or more (the fewest an atom of
  identical rows is a cluster from), and fewer of the subset's (8 rows in 5,000 are found there,
  on 50 of 50 draws; a cluster the subset held more of, its BIC declined);
* BIC falls by more than twice the entropy of its own rows' classification (:func:`classification_cost`,
  the new component's part of ICL: Biernacki, Celeux and Govaert 2000). A piece of a tail shares
  its rows with the components there; a separate cluster's rows are its own with certainty. ICL
  over every component was noise from one EM run to the next beside a heavy-tailed cluster,
  whose overlapping pieces EM rearranges (a review: a 30-row cluster beside a Student-t one, BIC
  -327, ICL +1,325; the same count refitted, ICL -3,229).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from gancore.cluster_selection import grow_start
from gancore.clustering import as_points
from gancore.gaussian_mixture import POINT_MASS_ROWS, GaussianMixture
from gancore.gmm_fit import fit_with_background


def classification_cost(joint: torch.Tensor, component: int) -> float:
    """Twice the entropy of ``component``'s part of the rows' classification among the components
    and the background (``joint``: :meth:`~gancore.gaussian_mixture.GaussianMixture.log_joint_with_background`
    of the rows), -2 sum_i t_i log t_i over the rows' posteriors t_i of that component (its term
    of ICL in the entropy form of McLachlan and Peel): 0 for rows that are its own with certainty,
    n log 2 for n rows it shares half and half."""
    posterior = torch.softmax(joint, 1)[:, component]
    return -2.0 * float(torch.special.xlogy(posterior, posterior).sum())


def grow_on_all_rows(
    x: torch.Tensor, gmm: GaussianMixture, max_k: int, seed: int, subset: torch.Tensor
) -> tuple[GaussianMixture, dict[str, Any]]:
    """``gmm``, fitted on every row of ``x``, with the clusters added that the rows ``subset``
    (indices into ``x``) its count was chosen on could not show, up to ``max_k`` components (the
    module docstring), and a record. Every least explained row is a candidate: beside 800 stray
    rows a cap of 500 left a 30-row cluster untried. A file no larger than its subset is left as
    it is. Where one more such cluster is found than ``max_k`` leaves room for, it says so
    (``at_limit`` and a warning)."""
    x = as_points(x)
    record: dict[str, Any] = {
        "added": 0,
        "at_limit": False,
        "rows": len(x),
        "subset": len(subset),
        "definition": f"clusters the {len(subset):,} rows the count was chosen on could not show, added on every training "
        f"row where the mixture explains them least (Fraley, Raftery and Wehrens 2005): of {POINT_MASS_ROWS} rows or more and "
        f"fewer of the subset's, where BIC falls by more than twice the entropy of their rows' classification (their term of ICL)",
    }
    # a count the selection chose at the limit is warned about there (Selection.warn_if_at_limit)
    if len(subset) >= len(x) or gmm.k >= max_k:
        return gmm, record
    # a candidate's weight is fitted up to a cluster of POINT_MASS_ROWS rows expected in the subset,
    # so that a large tail piece's gain does not outrank a small cluster's
    largest = POINT_MASS_ROWS / len(subset)
    while (fit := _grown(x, gmm, largest, seed, subset)) is not None:
        if gmm.k >= max_k:  # one cluster more is there, and no room for it
            record["at_limit"] = True
            warnings.warn(
                f"{record['added']} cluster(s) too small for the {len(subset):,} rows the count was chosen on were added on "
                f"every row up to mixture.max_parts={max_k} components, and the data hold at least one more: raise "
                "mixture.max_parts",
                stacklevel=3,
            )
            break
        gmm = fit
        record["added"] += 1
    return gmm, record


def _grown(x: torch.Tensor, gmm: GaussianMixture, largest: float, seed: int, subset: torch.Tensor) -> GaussianMixture | None:
    """``gmm`` refitted with one component more where it explains the rows least, if that
    component is a cluster the rows ``subset`` could not show (the module docstring); else None."""
    start = grow_start(x, gmm, largest, max_candidates=None)
    if start is None:
        return None
    fit = fit_with_background(x, *start, covariance=gmm.covariance, seed=seed)
    if fit.degenerate:
        return None
    joint = fit.log_joint_with_background(x)  # one E-step over every row for all three tests
    added = int(torch.mode(joint[start[1] == gmm.k, : fit.k].argmax(1)).values)  # the component the grown rows went to
    kept = (
        float(fit.weights[added]) * len(x) >= POINT_MASS_ROWS
        and int((joint[subset].argmax(1) == added).sum()) < POINT_MASS_ROWS  # the subset's rows it is most probable for
        and fit.bic - gmm.bic + classification_cost(joint, added) < 0
    )
    return fit if kept else None
