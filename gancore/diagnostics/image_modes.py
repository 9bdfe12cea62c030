"""The image protocols of :mod:`gancore.diagnostics.modes`: labelled image sets (the domain
classifier's argmax, high quality at ``confidence``) and Stacked MNIST (PacGAN's per-channel digit
triples, 1000 modes), each returning the same keys as the vector protocols."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gancore.diagnostics.modes import STACKED_MODES, STACKED_PROTOCOL, _as_numpy, _report, histogram, mode_kl


def labelled_assignments(probs: Any, confidence: float) -> torch.Tensor:
    """Each example's most probable class, -1 below ``confidence`` (the labelled protocol's quality)."""
    conf, pred = torch.as_tensor(_as_numpy(probs)).max(dim=1)
    return torch.where(conf >= confidence, pred, -1)


def stacked_channel_probs(probs: Any) -> torch.Tensor:
    """[N, 1000] triple probabilities -> [N, 3, 10] per-channel marginals (mode = d0*100 + d1*10 + d2)."""
    p = torch.as_tensor(_as_numpy(probs), dtype=torch.float64)
    if p.dim() != 2 or p.shape[1] != STACKED_MODES:
        raise ValueError(f"stacked MNIST probabilities must be [N, {STACKED_MODES}], got {list(p.shape)}")
    cube = p.reshape(-1, 10, 10, 10)
    return torch.stack([cube.sum((2, 3)), cube.sum((1, 3)), cube.sum((1, 2))], dim=1)


def stacked_sure(probs: Any, confidence: float) -> torch.Tensor:
    """Which samples the stacked protocol calls high quality: every channel's digit at ``confidence``."""
    return (stacked_channel_probs(probs).max(dim=2).values >= confidence).all(dim=1)


def modes_stacked(probs: Any, confidence: float) -> dict[str, Any]:
    """PacGAN's stacked-MNIST protocol on the classifier's 1000-way probabilities [N, 1000]."""
    digits = stacked_channel_probs(probs).argmax(dim=2)
    triples = (digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]).numpy()
    counts = np.bincount(triples, minlength=STACKED_MODES).astype(np.int64)
    n = len(triples)
    uniform = np.full(STACKED_MODES, 1.0 / STACKED_MODES)
    good = stacked_sure(probs, confidence)
    return _report(
        f"{STACKED_PROTOCOL}: per-channel argmax triple over all samples; KL vs uniform over 1000",
        counts,
        counts,
        uniform,
        float(good.double().mean()) if n else None,
        mode_kl(counts, uniform),
        n,
        [f"{i:03d}" for i in range(STACKED_MODES)],
        confidence=confidence,
        real_histogram_source="uniform over 1000 triples (protocol)",
    )


def modes_labelled(
    probs: Any,
    real_labels: Any,
    confidence: float,
    label_names: Sequence[str] | None = None,
    real_probs: Any | None = None,
) -> dict[str, Any]:
    """Classifier-argmax modes for a labelled image set; ``probs`` [N, K], ``real_labels`` test labels.

    ``real_probs``: the classifier on held-out real images. A mode is covered by samples the
    classifier is sure of, so what a faithful generator covers follows the real images it is sure
    of, not the labels: a class it is rarely sure of (look-alike classes, or 100 classes at 0.9)
    could never be covered, even by real images, and a faithful generator was partial_collapse."""
    p = torch.as_tensor(_as_numpy(probs), dtype=torch.float64)
    k = p.shape[1]
    conf, pred = p.max(dim=1)
    pred_np, good = pred.numpy(), (conf >= confidence).numpy()
    counts = np.bincount(pred_np, minlength=k).astype(np.int64)
    covered = np.bincount(pred_np[good], minlength=k)
    real_hist = histogram(np.bincount(_as_numpy(real_labels).astype(np.int64), minlength=k).astype(np.float64))
    n = len(pred_np)
    names = list(label_names) if label_names and len(label_names) == k else [str(i) for i in range(k)]
    return _report(
        "classifier_argmax: histogram of all samples; covered by a sample with max prob >= confidence",
        counts,
        covered,
        real_hist,
        float(good.mean()) if n else None,
        mode_kl(counts, real_hist),
        int(good.sum()),
        names,
        coverage_hist=None if real_probs is None else _sure_histogram(real_probs, confidence, k),
        confidence=confidence,
        real_histogram_source="prepared test labels"
        + ("" if real_probs is None else "; coverage: held-out real images the classifier is sure of"),
    )


def _sure_histogram(real_probs: Any, confidence: float, k: int) -> np.ndarray | None:
    """Classes of the held-out real images the classifier is sure of (None when it is of none)."""
    sure = labelled_assignments(real_probs, confidence).numpy()
    counts = np.bincount(sure[sure >= 0], minlength=k).astype(np.float64)
    return histogram(counts) if counts.sum() > 0 else None


def real_quality(real_probs: Any, real_modes: torch.Tensor, stacked: bool, confidence: float) -> float:
    """The high-quality share of held-out real data under the protocol (the quality floor's
    reference): Stacked MNIST's every-channel rule, else the share with a mode."""
    if stacked:
        return float(stacked_sure(real_probs, confidence).double().mean())
    return float((real_modes >= 0).double().mean())
