"""A vector part's own coordinates: each part of a mixture of GANs trains on its points centred
and scaled to unit spread (a fitted cluster's part: its principal axes, each at unit spread), and
sampling maps its samples back to the data's (:func:`to_data`)."""

from __future__ import annotations

from typing import Any

import torch

from gancore.clustering import principal_axes

# Points per dimension (plus one) from which a part is whitened: the sample covariance's smallest
# eigenvalues sit near (1 - sqrt(d / n))^2 of the true ones, 0.5 at ten points per dimension.
WHITEN_POINTS_PER_DIM = 10


def normalise_part(
    train: torch.Tensor, test: torch.Tensor, meta: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], dict[str, Any]]:
    """A vector part in its normalised coordinates: (train, test, meta, the affine record).

    Each part trains on its own points centred and scaled to unit spread: a GAN learns a blob at
    the origin fast and precisely, wherever the part lies (grid25 reaches +-4 at sigma 0.05).
    Sampling maps the part back: x * scale + shift, or x @ matrix^T + shift for a whitened part
    (whose record has the matrix and no scale)."""
    shift, back = part_normalisation(train, whiten=bool((meta.get("modes") or {}).get("estimated")))
    forward = torch.linalg.inv(back)
    affine: dict[str, Any] = {"shift": shift.tolist()}
    if _is_scalar(back):
        affine["scale"] = float(back[0, 0])
    else:
        affine["matrix"] = back.tolist()
    train, test = _affine(train, shift, forward), _affine(test, shift, forward)
    had_range = bool(meta.get("value_range"))
    meta = _normalised_meta(meta, shift, forward)
    if "matrix" in affine and had_range:
        meta["value_range"] = _own_range(train)
        meta["value_range_definition"] = "the part's training points' range +- 5 % on its principal axes (each at unit spread)"
    return train, test, meta, affine


def part_normalisation(train: torch.Tensor, whiten: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift [d], back-map [d, d]) of a vector part: the data are x = back @ z + shift for the
    part's normalised z. Known round modes (ring8, grid25; their protocol's sigma is one number):
    a scale, the part's RMS spread, times the identity. A fitted mixture's part (``whiten``): its
    principal axes, each scaled to unit spread, so that the GAN learns a round blob whatever the
    cluster's shape. A thin cluster (sds 8 and 0.4 at 45 degrees) scaled by one number was a
    line of spread 0.07 across, which part GANs drew at a half to two fifths of that width. Only
    from :data:`WHITEN_POINTS_PER_DIM` points per dimension and more: from few, the smallest
    sample variances fall well short of the true ones (12 points in 10-D: held-out points lay at
    5 times the training points' distance from the centre, whitened), and the part's held-out
    figures would read that as the generator's or D's doing."""
    x = train.double()
    shift = x.mean(0)
    d = x.shape[1]
    if whiten and len(x) >= WHITEN_POINTS_PER_DIM * (d + 1):
        _, values, vectors = principal_axes(x)
        top = float(values.max())
        if top > 0:
            # a direction without spread (a constant or collinear column) keeps a small width, not 0
            return shift, vectors * values.clamp_min(top * 1e-8).sqrt()[None]
    scale = float((x - shift).square().mean().sqrt()) or 1.0
    return shift, scale * torch.eye(d, dtype=torch.float64)


def _own_range(train: torch.Tensor) -> list[float]:
    """A whitened part's value range: its training points' extent widened by 5 % on each side (the
    data's box turned into the part's axes spans the thin axis' 1/sd: a tilted cluster's points
    filled 5 % of its pictures; a part without held-out points of its own is scored on the whole
    test split, which lies far out on its axes)."""
    lo, hi = float(train.double().min()), float(train.double().max())
    margin = 0.05 * (hi - lo or 1.0)
    return [lo - margin, hi + margin]


def _is_scalar(matrix: torch.Tensor) -> bool:
    return bool(torch.equal(matrix, matrix[0, 0] * torch.eye(len(matrix), dtype=matrix.dtype)))


def to_data(x: torch.Tensor, part: dict[str, Any]) -> torch.Tensor:
    """A part's samples back from its normalised coordinates (``part``: its manifest record)."""
    back = back_matrix(part, x.shape[1]).to(dtype=x.dtype, device=x.device)
    return x @ back.T + torch.tensor(part["shift"], dtype=x.dtype, device=x.device)


def back_matrix(part: dict[str, Any], dims: int) -> torch.Tensor:
    """A part's back-map as a matrix (the scale times the identity when it has none)."""
    if part.get("matrix"):
        return torch.tensor(part["matrix"], dtype=torch.float64)
    return float(part.get("scale", 1.0)) * torch.eye(dims, dtype=torch.float64)


def _affine(x: torch.Tensor, shift: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    return ((x.double() - shift) @ forward.T).to(x.dtype)


def _normalised_meta(meta: dict[str, Any], shift: torch.Tensor, forward: torch.Tensor) -> dict[str, Any]:
    """The mode centres, sigma, covariances and value range in a part's normalised coordinates
    z = forward @ (x - shift). Known centres' sigma is one number: their parts are only scaled."""
    modes = dict(meta.get("modes") or {})
    for key in ("centers", "means"):
        if modes.get(key):
            modes[key] = _affine(torch.tensor(modes[key], dtype=torch.float64), shift, forward).tolist()
    if modes.get("sigma"):
        modes["sigma"] = float(modes["sigma"]) * float(forward[0, 0])
    if modes.get("variances"):
        k, d = len(modes["variances"]), len(forward)
        cov = modes.get("covariances") or torch.diag_embed(torch.tensor(modes["variances"], dtype=torch.float64)).tolist()
        cov = forward @ torch.tensor(cov, dtype=torch.float64).reshape(k, d, d) @ forward.T
        modes["variances"] = torch.diagonal(cov, dim1=1, dim2=2).tolist()
        if modes.get("covariances") or not _is_scalar(forward):  # a turned diagonal covariance is full
            modes["covariances"] = ((cov + cov.transpose(1, 2)) / 2).tolist()
    if modes.get("outliers"):
        # a part holds its clusters' rows, the outliers among them: the data's share outside every
        # cluster is no part's, and its mixture is judged against it as a whole (the monitor's score)
        modes["outliers"] = {k: v for k, v in modes["outliers"].items() if k not in ("row_share", "log_density", "box")}
    out = {**meta, "modes": modes}
    if meta.get("value_range") and _is_scalar(forward):
        lo, hi = meta["value_range"]
        scale = float(forward[0, 0])
        out["value_range"] = [(lo - float(shift.max())) * scale, (hi - float(shift.min())) * scale]
    else:  # a whitened part's range is its own points' (_own_range): the data's box, turned, is far wider
        out.pop("value_range", None)
    return out
