"""Every name the parameters, the CLI and the orchestrators choose from, defined once.

Each set of names is a ``Literal`` type (what pydantic validates and the Prefect form offers as
choices) with a tuple beside it, one derived from the other so the two cannot disagree. The data
sets, losses and classifiers are read from their registries (:mod:`gancore.datasets`,
:mod:`gancore.losses`, :mod:`gancore.classifier_choices`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from gancore import classifier_choices, datasets, losses

StageName = Literal["prepare", "train", "sample", "evaluate", "diagnose"]
STAGE_ORDER: tuple[str, ...] = get_args(StageName)
# After the pipeline, adding to its run: the discriminator's linear probe (probe.enabled).
POST_STAGES: tuple[str, ...] = ("probe",)
ALL_STAGES: tuple[str, ...] = (*STAGE_ORDER, *POST_STAGES)

# The data sets are registered in gancore.datasets; their names are read from there.
DATASETS: tuple[str, ...] = datasets.NAMES
if TYPE_CHECKING:
    DatasetName = str
else:
    DatasetName = Literal[DATASETS]
VECTOR_DATASETS: tuple[str, ...] = datasets.of_kind("vector")
# Data sets read from the user's own files (data.path).
FILE_DATASETS: tuple[str, ...] = tuple(n for n, s in datasets.REGISTRY.items() if s.reads_path)

# The losses are registered in gancore.losses; their names are read from there.
LOSSES: tuple[str, ...] = tuple(losses.REGISTRY)
if TYPE_CHECKING:
    LossName = str
else:
    LossName = Literal[LOSSES]

# The classifiers evaluate.classifier chooses from are registered in gancore.classifier_choices.
CLASSIFIERS: tuple[str, ...] = classifier_choices.NAMES
if TYPE_CHECKING:
    ClassifierName = str
else:
    ClassifierName = Literal[CLASSIFIERS]

Orchestrator = Literal["cli", "dvc", "prefect"]
ORCHESTRATORS: tuple[str, ...] = get_args(Orchestrator)

# Augmentations D sees on real and generated samples (gancore.training.augment). DiffAugment's
# policy is what the diagnosis proposes for images (the one benchmarked longest); ADA's geometric,
# pixel-blitting and colour groups are there to choose.
DIFFAUGMENT: tuple[str, ...] = ("color", "translation", "cutout")
IMAGE_AUGMENTATIONS: tuple[str, ...] = (*DIFFAUGMENT, "geometric", "blit", "ada_color")
VECTOR_AUGMENTATIONS: tuple[str, ...] = ("jitter",)
AUGMENTATIONS: tuple[str, ...] = IMAGE_AUGMENTATIONS + VECTOR_AUGMENTATIONS


def parse_policy(text: str | None) -> list[str]:
    """``augment.policy`` (``"translation,cutout,color"``) as names, in order; empty: none."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]
