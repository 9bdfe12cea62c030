"""The classifier interface (:class:`Classifier`) and :func:`classify`, which every classifier
(:mod:`.domain`, :mod:`.inception`) builds on; :mod:`gancore.classifiers` picks one by name."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from gancore.data.prepared import to_model_range
from gancore.errors import EvaluationError


class Classifier:
    """p(y|x) and features for a batch. Subclasses implement :meth:`forward`.

    ``forward`` maps a float batch on :attr:`device` to ``(logits, features)``; :meth:`probabilities`
    turns logits into probabilities (a float64 softmax unless overridden).
    """

    name: str = "classifier"
    num_classes: int
    feature_dim: int
    #: bf16 autocast on CUDA; off where exact parity with a reference matters.
    mixed_precision: bool = True
    #: channels_last images on every device (always on CUDA); off where parity with a reference matters.
    channels_last: bool = False

    def __init__(self, module: nn.Module | None = None):
        # Any: subclasses without a network (the Gaussian posterior) never call it.
        self.module: Any = module
        self.device = torch.device("cpu")
        if module is not None:
            module.eval().requires_grad_(False)

    def to(self, device: str | torch.device) -> Classifier:
        device = torch.device(device)
        if self.module is not None:
            self.module.to(device)
            if device.type == "cuda" or self.channels_last:
                self.module.to(memory_format=torch.channels_last)
        self.device = device
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        """What the provenance card (:mod:`gancore.provenance`) says of this network:
        ``feature_network``, ``weights`` (with a hash where there is a file), ``resize`` and
        ``input_range``; two runs' numbers are ranked together only when these agree."""
        raise NotImplementedError(f"{type(self).__name__} must describe its network, weights, resize and input range")

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.double(), dim=1)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: float batch in model range (uint8 images are converted) -> (probs float64, features float32)."""
        x = to_model_range(x).to(self.device, non_blocking=True)
        if x.dim() == 4 and (self.device.type == "cuda" or self.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        # no_grad rather than inference_mode: inference tensors refuse later in-place updates,
        # which callers (centring features, clamping probabilities) are entitled to make.
        with torch.no_grad(), self._autocast():
            logits, features = self.forward(x)
        return self.probabilities(logits), features.float()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_classes={self.num_classes}, feature_dim={self.feature_dim}, device={self.device})"


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def classify(
    classifier: Classifier,
    x: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (float64 ``[N, K]``) and features (float32 ``[N, F]``) of all of ``x``, on the CPU.

    ``x`` may be float in model range or uint8 images (converted per batch, which keeps a large
    uint8 set from being expanded to float32 all at once). ``device`` moves the classifier first.
    """
    if batch_size <= 0:
        raise EvaluationError(f"batch_size must be positive, got {batch_size}")
    if device is not None:
        classifier.to(device)
    probs, features = [], []
    with torch.no_grad():
        for part in _batches(len(x), batch_size):
            p, f = classifier.predict(x[part])
            probs.append(p.cpu())
            features.append(f.cpu())
    if not probs:
        return torch.empty(0, classifier.num_classes, dtype=torch.float64), torch.empty(0, classifier.feature_dim)
    return torch.cat(probs), torch.cat(features)
