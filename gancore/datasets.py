"""The data sets, one :class:`DatasetSpec` each: the one place that says what a data set is.

The parameters' choices (``data.name``), the Prefect form, the data kind and shape, the evaluation
protocol's sample count, the domain classifier and the ``prepare`` stage all read this table.
Adding a data set is one new builder module and one entry in :data:`REGISTRY`.

This module stays light (no torch): ``gan --help`` and parameter validation import it. The
builder is named as ``"module:function"`` and imported only when ``prepare`` builds that set;
:mod:`gancore.codedeps` reads the same names, so ``prepare``'s DVC dependencies include them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gancore.lazy import by_name, modules, resolve

Kind = Literal["vector", "image"]
# How the domain classifier is built: the exact/fitted mixture posterior (vectors), a CNN over
# the labels, or one digit CNN applied per channel (Stacked MNIST's 1,000 modes).
ClassifierKind = Literal["gaussian_posterior", "cnn", "stacked_digits"]
Fetch = Literal["generated", "torchvision", "files"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: Kind
    build: str  # "module:function"; function(spec, params, layout) -> PreparedData
    summary: str  # one line: what it is, and where it comes from
    fetch: Fetch
    shape: tuple[int, ...] | None  # native shape; None: given by the user's files (data.path)
    channels: int | None = None  # images: channels (also when the side comes from data.image_size)
    modes: int | None = None  # known count of modes (classes, centres); None: found from the data
    labelled: bool = True  # every example carries its mode (class or centre) label
    protocol_n: int | None = None  # samples the evaluation protocol draws (None: 2,500 vectors, 10,000 images)
    classifier: ClassifierKind = "cnn"
    photographs: bool = False  # the domain classifier trains on shifted and mirrored copies
    torchvision: str | None = None  # fetch=torchvision: the torchvision.datasets class

    @property
    def reads_path(self) -> bool:
        return self.fetch == "files"

    @property
    def samples(self) -> int:
        """The evaluation protocol's sample count (``sample.n`` when unset)."""
        return self.protocol_n or (2500 if self.kind == "vector" else 10000)

    def builder(self) -> Callable[..., Any]:
        found: Callable[..., Any] = resolve(self.build)
        return found


REGISTRY: dict[str, DatasetSpec] = by_name(
    DatasetSpec(
        "ring8",
        "vector",
        "gancore.data.toy:build",
        "8 Gaussians on the unit circle, sigma 0.01 (PacGAN's 2D protocol)",
        "generated",
        (2,),
        modes=8,
        classifier="gaussian_posterior",
    ),
    DatasetSpec(
        "grid25",
        "vector",
        "gancore.data.toy:build",
        "25 Gaussians on the grid {-4,-2,0,2,4}^2, sigma 0.05 (PacGAN's 2D protocol)",
        "generated",
        (2,),
        modes=25,
        classifier="gaussian_posterior",
    ),
    DatasetSpec(
        "points",
        "vector",
        "gancore.data.points:build",
        "your own vectors: a .npy or .csv file of numeric columns (data.path), modes found by a GMM",
        "files",
        None,
        labelled=False,
        classifier="gaussian_posterior",
    ),
    DatasetSpec(
        "mnist",
        "image",
        "gancore.data.images:build_torchvision",
        "MNIST digits, 28x28 grey",
        "torchvision",
        (1, 28, 28),
        1,
        10,
        torchvision="MNIST",
    ),
    DatasetSpec(
        "fashion_mnist",
        "image",
        "gancore.data.images:build_torchvision",
        "Fashion-MNIST clothes, 28x28 grey",
        "torchvision",
        (1, 28, 28),
        1,
        10,
        torchvision="FashionMNIST",
    ),
    DatasetSpec(
        "cifar10",
        "image",
        "gancore.data.images:build_torchvision",
        "CIFAR-10 photographs, 32x32 colour",
        "torchvision",
        (3, 32, 32),
        3,
        10,
        photographs=True,
        torchvision="CIFAR10",
    ),
    DatasetSpec(
        "stacked_mnist",
        "image",
        "gancore.data.images:build_stacked_mnist",
        "three MNIST digits as the channels of one image: 1,000 modes (PacGAN, VEEGAN protocol)",
        "torchvision",
        (3, 28, 28),
        3,
        1000,
        protocol_n=26000,
        classifier="stacked_digits",
        torchvision="MNIST",
    ),
    DatasetSpec(
        "image_folder",
        "image",
        "gancore.data.images:build_image_folder",
        "your own images (data.path): a flat folder, or one subfolder per class; side data.image_size",
        "files",
        None,
        3,
        labelled=False,  # labelled by subfolder when it has them
        photographs=True,
    ),
)
NAMES: tuple[str, ...] = tuple(REGISTRY)


def dataset(name: str) -> DatasetSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; choose from {', '.join(NAMES)}") from None


def of_kind(kind: Kind) -> tuple[str, ...]:
    return tuple(n for n, s in REGISTRY.items() if s.kind == kind)


def builder_modules() -> tuple[str, ...]:
    """The modules the builders live in (what ``prepare`` may import by name)."""
    return modules(s.build for s in REGISTRY.values())
