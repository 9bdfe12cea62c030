"""The domain classifiers' networks and how they are saved and loaded (``data/prepared/classifier.pt``):
the CNN, the Gaussian-mixture posterior of vector data, and Stacked MNIST's per-channel digit CNN.
Fitting them is :mod:`gancore.classifiers.domain`; this module is what evaluation and the
diagnosis load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gancore.classifiers.base import Classifier
from gancore.data.prepared import CLASSIFIER_FILE, load_meta
from gancore.errors import EvaluationError, first_line
from gancore.gaussian_mixture import GaussianMixture, mixture_problem
from gancore.io import file_digest, torch_load

FORMAT = 1


# Measured on MNIST (full train set, data.classifier_epochs=8, one CPU thread, channels_last):
# three 1-conv blocks at 16/32/64 channels reach 99.41% test accuracy and a test-set MNIST score of
# 9.860 +- 0.028 (published: 9.8793 +- 0.0614) in 7.5 minutes; 32/64/128 channels reach 99.58% and
# 9.870 at three times the cost. Dropout and shift augmentation each cost confidence on the test
# set (lower "MNIST score") without buying accuracy at this training length, so grey images get
# neither. Colour images get a deeper, wider network with flips and shifts (meant for a GPU;
# CIFAR-10 is not checked offline).
GREY_ARCH = {"widths": [16, 32, 64], "convs_per_block": 1, "hidden": 128, "dropout": 0.0, "pool": 3}
COLOUR_ARCH = {"widths": [64, 128, 256], "convs_per_block": 2, "hidden": 128, "dropout": 0.1, "pool": 4}


class ConvNet(nn.Module):
    """Conv blocks (conv-BN-ReLU x n, max-pool 2), adaptive average pool, FC ``hidden`` -> classes.

    ``forward`` returns ``(logits, features)``; features are the ``hidden``-D penultimate layer.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: list[int],
        convs_per_block: int = 1,
        hidden: int = 128,
        dropout: float = 0.0,
        pool: int = 3,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(pool), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels * pool * pool, hidden), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(self.body(x))
        return self.head(features), features


def build_network(arch: dict[str, Any]) -> ConvNet:
    return ConvNet(**arch)


# -- classifiers ------------------------------------------------------------------------------


class GaussianPosterior(Classifier):
    """p(k | x) of a Gaussian mixture: softmax_k(log w_k - 1/2 [(x - mu_k)^T Sigma_k^-1 (x - mu_k)
    + log |Sigma_k|]); features are the points.

    ring8 / grid25: the generating mixture (equal weights, isotropic sigma), where this is
    softmax_k(-||x - c_k||^2 / (2 sigma^2)). points: the mixture prepare fitted to the data
    (meta ``modes.weights/means/variances``, and ``covariances`` where BIC chose full ones), its
    components' posteriors summed over each cluster (``modes.groups``).
    Computed in float64: with sigma = 0.01 the exponents reach -1e5, far past float32's range, and
    the softmax's max-subtraction keeps the largest term at exp(0).
    """

    name = "domain"
    mixed_precision = False

    def __init__(
        self,
        centers: Any,
        sigma: float | None = None,
        weights: Any = None,
        variances: Any = None,
        covariances: Any = None,
        groups: Any = None,
    ):
        super().__init__()
        centres = torch.as_tensor(centers, dtype=torch.float64)
        if centres.dim() != 2 or not len(centres):
            raise EvaluationError(f"a Gaussian posterior needs centres [K, d], got {tuple(centres.shape)}")
        k, d = centres.shape
        if variances is None:
            if sigma is None or not sigma > 0:
                raise EvaluationError(f"a Gaussian posterior needs sigma > 0 or per-component variances, got sigma={sigma}")
            variances = torch.full((k, d), float(sigma) ** 2, dtype=torch.float64)
        var = torch.as_tensor(variances, dtype=torch.float64)
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        cov = None if covariances is None else torch.as_tensor(covariances, dtype=torch.float64)
        clusters = None if groups is None else torch.as_tensor(groups, dtype=torch.long)
        problem = mixture_problem(w, centres, var, cov, clusters)
        if problem:
            raise EvaluationError(f"a Gaussian posterior: {problem}")
        self.mixture = GaussianMixture(w, centres, var, 0.0, 0, cov, groups=clusters)
        self.sigma = sigma
        self.num_classes = self.mixture.clusters
        self.feature_dim = d

    @property
    def centers(self) -> torch.Tensor:
        return self.mixture.means

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> GaussianPosterior:
        modes = meta.get("modes") or {}
        if modes.get("means") and modes.get("variances"):
            return cls(
                modes["means"],
                weights=modes.get("weights"),
                variances=modes["variances"],
                covariances=modes.get("covariances"),
                groups=modes.get("groups"),
            )
        if not modes.get("centers") or modes.get("sigma") is None:
            raise EvaluationError(f"meta.json of {meta.get('name')!r} lacks modes.centers / modes.sigma; run `gan prepare` again")
        return cls(modes["centers"], modes["sigma"])

    def to(self, device: str | torch.device) -> GaussianPosterior:
        super().to(device)
        self.mixture = self.mixture.to(self.device)
        return self

    def describe(self) -> dict[str, str]:
        return {
            "feature_network": "the points themselves (coordinates); classes from the data's Gaussian mixture",
            "weights": "-",
            "resize": "none",
            "input_range": "the prepared data's units",
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[1] != self.feature_dim:
            raise EvaluationError(f"the Gaussian posterior classifies points [B, {self.feature_dim}], got {tuple(x.shape)}")
        # log sum w_k N(x | mu_k, Sigma_k) over each cluster's components: the softmax's logits up
        # to a constant shared by every cluster (a cluster is a class, whatever components it takes)
        return self.mixture.cluster_log_joint(x.double()), x.clone()


class FittedClassifier(Classifier):
    """A domain CNN: fitted by ``gan prepare`` on ``data`` and saved as ``weights`` (file and hash),
    which :func:`load_domain_classifier` records for the provenance card."""

    name = "domain"
    channels_last = True
    data: str = "?"
    weights: str = "-"

    def describe(self) -> dict[str, str]:
        return {
            "feature_network": f"domain classifier trained in prepare on {self.data} ({self.feature_dim}-D penultimate features)",
            "weights": self.weights,
            "resize": "none (native size)",
            "input_range": "[-1, 1]",
        }


class CNNClassifier(FittedClassifier):
    """A :class:`ConvNet` over whole images."""

    def __init__(self, network: ConvNet, num_classes: int, feature_dim: int):
        super().__init__(network)
        self.num_classes = num_classes
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module(x)


class StackedDigitClassifier(FittedClassifier):
    """A 1-channel digit :class:`ConvNet` applied to each channel of stacked MNIST.

    The channels are independent digits, so p(d0, d1, d2 | x) = p0(d0) p1(d1) p2(d2), laid out at
    index d0*100 + d1*10 + d2 (the prepared labels' convention); features are the channels'
    features side by side.
    """

    def __init__(self, network: ConvNet, channels: int, digit_classes: int, digit_features: int):
        super().__init__(network)
        self.channels = channels
        self.digit_classes = digit_classes
        self.num_classes = digit_classes**channels
        self.feature_dim = digit_features * channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        if c != self.channels:
            raise EvaluationError(f"stacked classifier expects {self.channels} channels, got {c}")
        logits, features = self.module(x.reshape(b * c, 1, h, w))
        return logits.reshape(b, c, -1), features.reshape(b, -1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        per_channel = torch.softmax(logits.double(), dim=2)  # [B, C, 10]
        joint = per_channel[:, 0]
        for c in range(1, self.channels):
            joint = (joint[:, :, None] * per_channel[:, c, None, :]).flatten(1)
        return joint


def classifier_from_checkpoint(ckpt: dict[str, Any]) -> FittedClassifier:
    network = build_network(ckpt["arch"])
    network.load_state_dict(ckpt["state_dict"])
    hidden = ckpt["arch"]["hidden"]
    if ckpt["kind"] == "stacked_cnn":
        return StackedDigitClassifier(network, ckpt["in_channels"], ckpt["arch"]["num_classes"], hidden)
    if ckpt["kind"] == "cnn":
        return CNNClassifier(network, ckpt["num_classes"], hidden)
    raise EvaluationError(f"unknown domain classifier kind {ckpt['kind']!r} in the checkpoint; run `gan prepare` again")


def load_domain_classifier(directory: str | Path) -> Classifier:
    """The domain classifier described by ``directory/meta.json`` (and ``classifier.pt``)."""
    directory = Path(directory)
    meta = load_meta(directory)
    if meta.get("kind") == "vector":
        return GaussianPosterior.from_meta(meta)
    info = meta.get("classifier") or {}
    path = directory / info.get("file", CLASSIFIER_FILE)
    if not path.exists():
        if not info or info.get("kind") == "none":
            reason = info.get("reason") or "prepare did not fit one"
            raise EvaluationError(
                f"data set {meta.get('name')!r} has no domain classifier ({reason}); "
                "set evaluate.classifier=inception (or inception_tf) to score it"
            )
        raise EvaluationError(f"{path} is missing: the domain classifier is trained by `gan prepare`; run `gan prepare` again")
    ckpt = torch_load(path, EvaluationError, "run `gan prepare` again")
    try:
        classifier = classifier_from_checkpoint(ckpt)
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"{path} does not hold a domain classifier ({first_line(exc)}); run `gan prepare` again") from None
    classifier.data, classifier.weights = str(meta.get("name")), f"{path.name} sha256:{file_digest(path)[:16]}"
    return classifier


def for_layout(layout: Any) -> Classifier:
    """The ``domain`` entry of :data:`gancore.classifier_choices.REGISTRY`: the run's own classifier."""
    return load_domain_classifier(layout.prepared)


def digit_split(labels: torch.Tensor, channels: int) -> torch.Tensor:
    """Triple labels d0*100+d1*10+d2 -> [N, channels] digits."""
    powers = 10 ** torch.arange(channels - 1, -1, -1)
    return (labels[:, None] // powers) % 10
