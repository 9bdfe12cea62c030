"""Sample pictures without matplotlib: an image grid, and 2D points rendered as a density image.

Both are cheap (milliseconds), so the collapse monitor can save one at every check without
slowing training; ``samples/samples.png`` of 2D data is the fuller matplotlib scatter. Also the
BIC curves a part count was chosen from (matplotlib, once per prepare).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gancore.io import atomic_path


def save_image_grid(images: torch.Tensor, path: str | Path) -> None:
    """uint8 images [N, C, H, W] as one roughly square grid."""
    from torchvision.utils import make_grid, save_image

    grid = make_grid(images.float() / 255.0, nrow=math.ceil(math.sqrt(len(images))), padding=2)
    with atomic_path(path) as tmp:
        save_image(grid, tmp, format="png")


def plane(points: Any) -> np.ndarray:
    """The first two coordinates of points [N, d] (1-D points on the x axis), for 2D pictures."""
    p = np.asarray(points, dtype=np.float64)
    p = p.reshape(len(p), -1)
    return np.concatenate([p, np.zeros_like(p)], axis=1) if p.shape[1] == 1 else p[:, :2]


def points_image(points: Any, centers: Any = None, extent: tuple[float, float] | None = None, size: int = 256) -> np.ndarray:
    """Points as an RGB uint8 image [size, size, 3] (their first two coordinates): white background,
    darker where denser, mode centres as red crosses; ``extent`` (lo, hi) on both axes (default:
    the points' range)."""
    p = plane(points)
    c = None if centers is None or not len(centers) else plane(centers)
    if extent is None:
        ref = p if c is None else np.concatenate([p, c])
        finite = ref[np.isfinite(ref).all(1)]
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (-1.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        extent = (lo - pad, hi + pad)
    lo, hi = extent
    counts, _, _ = np.histogram2d(p[:, 1], p[:, 0], bins=size, range=[[lo, hi], [lo, hi]])
    shade = 1.0 - np.sqrt(counts / counts.max()) if counts.max() > 0 else np.ones_like(counts)
    rgb = np.repeat((255 * shade)[::-1, :, None], 3, axis=2)
    rgb[counts[::-1] > 0, 2] = np.maximum(rgb[counts[::-1] > 0, 2], 160)  # generated mass in blue
    if c is not None:
        scale = (size - 1) / (hi - lo)
        for x, y in c:
            col, row = int(round((x - lo) * scale)), int(round((hi - y) * scale))
            for d in range(-3, 4):
                for r, q in ((row + d, col), (row, col + d)):
                    if 0 <= r < size and 0 <= q < size:
                        rgb[r, q] = (220, 0, 0)
    return rgb.astype(np.uint8)


def save_points(points: Any, path: str | Path, centers: Any = None, extent: tuple[float, float] | None = None) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(points_image(points, centers, extent)).save(tmp, format="png")


def plot_selection(selection: dict[str, Any], path: Any, name: str) -> None:
    """The BIC curves (one per covariance model) the part count was chosen from, its minimum marked."""
    from matplotlib.figure import Figure

    from gancore.io import save_figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    curves = selection.get("curves") or {selection.get("covariance", "diag"): selection["bic"]}
    for model, curve in curves.items():
        chosen_model = model == selection.get("covariance", model)
        values = [math.nan if b is None else b for b in curve]  # None: a degenerate fit, no candidate
        ax.plot(selection["k"][: len(values)], values, marker="o", ms=3, label=f"{model} covariances", lw=2 if chosen_model else 1)
    chosen = selection["chosen"]
    ax.axvline(chosen, color="tab:red", ls="--", label=f"chosen: {chosen}")
    ax.set_xlabel("Gaussian components k")
    ax.set_ylabel("BIC (lower is better)")
    # a points file's components are grouped into clusters (gancore.mode_merging), which are the parts
    ax.set_title(f"{name}: components of the data's mixture")
    ax.legend()
    save_figure(fig, path, dpi=100, bbox_inches="tight")
