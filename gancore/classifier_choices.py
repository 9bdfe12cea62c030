"""The classifiers ``evaluate.classifier`` chooses from, one :class:`ClassifierSpec` each: the
network whose probabilities and features every metric of ``gan evaluate`` is computed in.

The parameters' choices, the Prefect form, ``gan evaluate``, ``gan classifiers`` and the README
read :data:`REGISTRY`. Adding a feature space (say DINOv2's, for FD_DINOv2) is a
:class:`gancore.classifiers.base.Classifier` subclass (its ``forward`` and its ``describe``, which
the provenance card prints), a loader taking the run's :class:`gancore.layout.Layout`, and one
entry here.

Light on purpose (no torch): parameter validation imports it. Loaders are named as
``"module:function"`` and imported when a run scores with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gancore.lazy import by_name, modules, resolve


@dataclass(frozen=True)
class ClassifierSpec:
    """One choice of ``evaluate.classifier``; ``comparable``: which published numbers its figures
    may be put beside (every figure compares between this project's runs on the same data)."""

    name: str
    load: str  # "module:function"; (layout) -> Classifier on the CPU
    summary: str
    comparable: str

    def loader(self) -> Any:
        return resolve(self.load)


REGISTRY: dict[str, ClassifierSpec] = by_name(
    ClassifierSpec(
        "domain",
        "gancore.classifiers.domain_networks:for_layout",
        "the data set's own classifier, fitted by `gan prepare` (a Gaussian posterior for vectors, a CNN "
        "for labelled images, a per-channel digit CNN for Stacked MNIST)",
        "the MNIST score (IS) and PacGAN/VEEGAN mode counts, whose protocols use such a classifier; not FID",
    ),
    ClassifierSpec(
        "inception",
        "gancore.classifiers.inception:load_inception",
        "torchvision's ImageNet Inception-v3 (IMAGENET1K_V1), 2048-D pool features",
        "none: not the weights published IS and FID use (they differ by several points)",
    ),
    ClassifierSpec(
        "inception_tf",
        "gancore.classifiers.inception:load_inception_tf",
        "the TF inception-2015-12-05 graph behind published IS and FID (torch-fidelity's port; offline "
        "with `gancore[inception]`, features only)",
        "published FID and KID (and IS with torch-fidelity's own weights, which carry the logits)",
    ),
)
NAMES: tuple[str, ...] = tuple(REGISTRY)


def loader_modules() -> tuple[str, ...]:
    """The modules the loaders live in: code ``gan evaluate`` runs (its DVC dependencies)."""
    return modules(s.load for s in REGISTRY.values())
