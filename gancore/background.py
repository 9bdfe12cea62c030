"""The rows outside every cluster of a points file: a fitted mixture's background (a uniform law
over the data's box, mclust's noise component) explains them better than every cluster.

Under :data:`STRAY_ROWS_MAX` of its weight they are stray rows, glitches no generator need make,
and each trains in the part of its most probable cluster; from it they are flat rows the data
hold: the diagnosis tests a generator on them as on a mode (:mod:`gancore.diagnostics.outside`),
and the mixture of GANs trains them as a part of their own (:mod:`gancore.partition`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from gancore.gaussian_mixture import GaussianMixture, mixture_from_modes

if TYPE_CHECKING:
    from gancore.data.prepared import PreparedData

# Stray rows are a few: under this weight of the background, the rows outside every cluster are
# glitches no generator need make (GANs on five clusters with 2 % and 5 % of rows scattered in a
# box five times as wide made 0.08-0.6 % and 0.2 %); from it, they are flat rows the data hold,
# and a generator far short of them is short as of a mode. A definition, not a fit: a cliff
# (a generator dropping 8 % of flat rows is not flagged, one dropping 12 % is), said in the
# README. Relative to the lightest cluster instead, the test came and went with the clusters:
# 30 % flat rows beside two clusters went untested, 2 % strays beside a cluster of 20 rows were
# tested (a review).
STRAY_ROWS_MAX = 0.1
# Rows per call of GaussianMixture.outliers (its N x K log-densities).
CHUNK = 4096


def as_rows(x: Any) -> torch.Tensor:
    """``x`` as float64 rows (flattened), also where it has none."""
    x = torch.as_tensor(x)
    # (no rows: -1 cannot be inferred, so the columns come from the shape)
    return x.double().reshape(len(x), -1) if len(x) else x.double().reshape(0, math.prod(x.shape[1:]))


def outside_mask(points: Any, mixture: GaussianMixture) -> torch.Tensor:
    """Which of ``points`` the mixture's background explains better than every cluster: [N] bool."""
    x = as_rows(points)
    if not len(x):
        return torch.zeros(0, dtype=torch.bool)
    return torch.cat([mixture.outliers(chunk) for chunk in x.split(CHUNK)])


def is_tested(mixture: GaussianMixture, share: float | None) -> bool:
    """Whether the rows outside every cluster, ``share`` of the training rows, are flat rows the
    data hold (a background weighing :data:`STRAY_ROWS_MAX` or more), not stray rows."""
    return bool(share) and mixture.background_log_joint is not None and (mixture.noise or 0.0) >= STRAY_ROWS_MAX


def tested_background(modes: dict[str, Any]) -> GaussianMixture | None:
    """The mixture of a ``meta.json``'s ``modes`` where the rows outside every cluster are flat rows
    the data hold (:func:`is_tested`); None elsewhere."""
    mixture = mixture_from_modes(modes)
    return mixture if mixture is not None and is_tested(mixture, (modes.get("outliers") or {}).get("row_share")) else None


def outside_masks(data: PreparedData) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Which training and test rows of a prepared points file lie outside every cluster, where they
    are flat rows the data hold (:func:`tested_background`); None elsewhere. The mixture of GANs
    trains them as a part of their own: in the parts of their most probable clusters, each part's
    GAN learned a cluster with flat rows around it and left most of the box empty (measured in
    CHANGELOG.md, "flat rows outside every cluster")."""
    mixture = tested_background(data.meta.get("modes") or {})
    if mixture is None:
        return None
    return outside_mask(data.train, mixture), outside_mask(data.test, mixture)
