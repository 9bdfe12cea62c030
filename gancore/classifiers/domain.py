"""Domain classifiers: p(mode | x) for the data set itself, fitted during ``gan prepare``.

- ring8 / grid25: the exact posterior of the equal-weight Gaussian mixture, nothing to train;
  points: the posterior of the Gaussian mixture prepare fitted to the data's clusters.
- mnist, fashion_mnist, cifar10, labelled image folders: a small CNN trained with Adam for
  ``data.classifier_epochs`` epochs; features are its penultimate layer. Adaptive pooling lets one
  network serve 28, 32 and 64 pixel images.
- stacked_mnist: one digit CNN trained on the individual channels, applied to each channel; the
  1000-way probabilities are the outer product of the three 10-way ones (mode d0*100+d1*10+d2).

Weights go to ``data/prepared/classifier.pt`` ({kind, state_dict, arch, num_classes, in_channels,
image_size}, loadable with ``weights_only=True``).

Cache: trained weights are also kept under ``$GANCORE_CACHE_DIR/classifiers`` (default
``~/.cache/gancore/classifiers``; ``GANCORE_CACHE_DIR=off`` disables it), keyed by a sha256 of the
training tensors and labels, the architecture, the training settings, the epochs, the seed, the
text of the modules that train it, torch's version and the device type. A hit reuses the weights and the recorded training cost; the test accuracy is
measured again on ``data.test`` every time, so the stored number always describes these data.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gancore import progress
from gancore.classifiers.base import Classifier, classify
from gancore.classifiers.domain_cache import CACHE_ENV, cache_directory
from gancore.classifiers.domain_cache import cache_key as _cache_key
from gancore.classifiers.domain_cache import cache_load as _cache_load
from gancore.classifiers.domain_cache import cache_store as _cache_store
from gancore.classifiers.domain_networks import (
    COLOUR_ARCH,
    FORMAT,
    GREY_ARCH,
    CNNClassifier,
    ConvNet,
    GaussianPosterior,
    StackedDigitClassifier,
    build_network,
    classifier_from_checkpoint,
    digit_split,
    load_domain_classifier,
)
from gancore.data.prepared import CLASSIFIER_FILE, PreparedData, to_model_range
from gancore.datasets import dataset
from gancore.device import resolve_device
from gancore.errors import EvaluationError
from gancore.io import torch_save
from gancore.seeds import derive, generator

log = logging.getLogger(__name__)

TRAIN: dict[str, Any] = {"batch_size": 128, "lr": 5e-3, "pct_start": 0.1, "eval_batch_size": 1000}


# -- fitting ----------------------------------------------------------------------------------


def fit_domain_classifier(data: PreparedData, params, directory: str | Path) -> dict[str, Any]:
    """Fit the domain classifier of ``data``; save weights in ``directory``; return meta["classifier"].

    The result holds kind, file (when weights were saved), num_classes, feature_dim,
    test_accuracy (on data.test / data.test_labels), epochs and seconds (training time; on a
    cache hit the time the cached training took, with ``cache: "hit"``).
    """
    start = time.perf_counter()
    directory = Path(directory)
    name = data.meta.get("name")
    if dataset(str(name or params.data.name)).classifier == "gaussian_posterior":
        return _fit_gaussian(data, start)
    epochs = params.data.classifier_epochs
    if epochs == 0:
        return _none("data.classifier_epochs=0", start)
    if data.train_labels is None:
        return _none(f"{name} has no class labels", start)
    return _fit_network(data, params, directory, start)


def _none(reason: str, start: float) -> dict[str, Any]:
    return {"kind": "none", "reason": reason, "test_accuracy": None, "epochs": 0, "seconds": round(time.perf_counter() - start, 3)}


def _fit_gaussian(data: PreparedData, start: float) -> dict[str, Any]:
    classifier = GaussianPosterior.from_meta(data.meta)
    estimated = bool((data.meta.get("modes") or {}).get("estimated"))
    info: dict[str, Any] = {
        "kind": "gaussian_posterior",
        "definition": "posterior of the Gaussian mixture fitted to the training data (meta.modes: weights, means, variances; covariances when full)"
        if estimated
        else "exact posterior over the mixture centres (meta.modes.centers, sigma; equal priors)",
        "num_classes": classifier.num_classes,
        "feature_dim": classifier.feature_dim,
    }
    info["test_accuracy"] = _accuracy(classifier, data.test, data.test_labels)
    info.update(epochs=0, seconds=round(time.perf_counter() - start, 3))
    return info


def _accuracy(classifier: Classifier, x: torch.Tensor, labels: torch.Tensor | None, device=None) -> float | None:
    if labels is None or len(x) == 0:
        return None
    probs, _ = classify(classifier, x, TRAIN["eval_batch_size"], device)
    return (probs.argmax(1) == labels.cpu()).double().mean().item()


def _stacked_training_set(train: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel as a 1-channel digit image with its digit label, duplicates removed.

    The channels are drawn from MNIST's 60,000 digits, so 128,000 stacked images hold 384,000
    channels but at most 60,000 distinct digits: training on the distinct ones costs what MNIST
    itself costs. ``torch.unique`` sorts, which also makes the set independent of stacking order.
    """
    n, c, h, w = train.shape
    digits = train.reshape(n * c, h * w)
    digit_labels = digit_split(labels, c).reshape(-1)
    unique, inverse = torch.unique(digits, dim=0, return_inverse=True)
    unique_labels = torch.empty(len(unique), dtype=torch.long)
    unique_labels[inverse] = digit_labels
    return unique.reshape(-1, 1, h, w), unique_labels


def _fit_network(data: PreparedData, params, directory: Path, start: float) -> dict[str, Any]:
    assert data.train_labels is not None  # fit_domain_classifier checked
    name = data.meta.get("name")
    spec = dataset(str(name or params.data.name))
    stacked = spec.classifier == "stacked_digits"
    channels, size = data.train.shape[1], data.train.shape[-1]
    if stacked:
        images, labels = _stacked_training_set(data.train, data.train_labels)
        arch = dict(GREY_ARCH, in_channels=1, num_classes=10)
        num_classes = 10**channels
    else:
        images, labels = data.train, data.train_labels.long()
        num_classes = int((data.meta.get("modes") or {}).get("count") or int(labels.max()) + 1)
        arch = dict(GREY_ARCH if channels == 1 else COLOUR_ARCH, in_channels=channels, num_classes=num_classes)
    kind = "stacked_cnn" if stacked else "cnn"
    epochs, seed = params.data.classifier_epochs, params.seed
    device = resolve_device(params.device)
    settings = dict(TRAIN, augment=_augmentation(spec.photographs), epochs=epochs, seed=seed)

    key = _cache_key(kind, arch, settings, images, labels, device)
    ckpt, record = _cache_load(key)
    cache = "hit" if ckpt is not None else ("miss" if cache_directory() else "off")
    if ckpt is None:
        train_start = time.perf_counter()
        network, record = _train(build_network_seeded(arch, seed, device), images, labels, settings, device)
        record["seconds"] = round(time.perf_counter() - train_start, 3)
        record["device"] = str(device)
        ckpt = {
            "format": FORMAT,
            "kind": kind,
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "arch": arch,
            "num_classes": num_classes,
            "in_channels": channels,
            "image_size": size,
        }
        _cache_store(key, ckpt, record)

    torch_save(ckpt, directory / CLASSIFIER_FILE)
    classifier = classifier_from_checkpoint(ckpt).to(device)
    info: dict[str, Any] = {
        "kind": kind,
        "file": CLASSIFIER_FILE,
        "num_classes": classifier.num_classes,
        "feature_dim": classifier.feature_dim,
        "arch": arch,
        "train_examples": len(images),
    }
    if isinstance(classifier, StackedDigitClassifier):
        info.update(_stacked_accuracy(classifier, data.test, data.test_labels))
    else:
        info["test_accuracy"] = _accuracy(classifier, data.test, data.test_labels)
    info.update(
        train_accuracy=record.get("train_accuracy"),
        epochs=epochs,
        seconds=record.get("seconds"),
        cache=cache,
        cache_key=key,
        fit_seconds=round(time.perf_counter() - start, 3),
    )
    return info


def _stacked_accuracy(classifier: StackedDigitClassifier, test: torch.Tensor, labels: torch.Tensor | None) -> dict[str, Any]:
    if labels is None:
        return {"test_accuracy": None}
    probs, _ = classify(classifier, test, TRAIN["eval_batch_size"])
    triple = probs.argmax(1)
    c = classifier.channels
    # argmax of a product of independent factors is the tuple of the factors' argmaxes.
    predicted, actual = digit_split(triple, c), digit_split(labels.cpu(), c)
    per_digit = (predicted == actual).double().mean(0)
    return {
        "test_accuracy": (triple == labels.cpu()).double().mean().item(),
        "test_accuracy_definition": "share of test images whose three digits are all right",
        "per_digit_accuracy": [round(v, 6) for v in per_digit.tolist()],
    }


def _augmentation(photographs: bool) -> dict[str, Any]:
    """Shifts and mirror images for photographs; none for digits and clothes (see GREY_ARCH)."""
    return {"shift": 2 if photographs else 0, "flip": photographs}


def build_network_seeded(arch: dict[str, Any], seed: int, device: torch.device) -> ConvNet:
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only: the network is built on the CPU, and CUDA's RNG is not ours to reseed.
        torch.default_generator.manual_seed(derive(seed, "classifier-init"))
        return build_network(arch).to(device)


def _augment(x: torch.Tensor, shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-image random translation by up to ``shift`` pixels (black fill) and optional mirror."""
    b, c, h, w = x.shape
    if shift:
        padded = F.pad(x, (shift,) * 4, value=-1.0)
        oy = torch.randint(0, 2 * shift + 1, (b,), generator=gen).to(x.device)
        ox = torch.randint(0, 2 * shift + 1, (b,), generator=gen).to(x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)
        cols = ox[:, None] + torch.arange(w, device=x.device)
        # advanced indices around a slice put the indexed dims first: [B, H, W, C]
        x = padded[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2).contiguous()
    if flip:
        mirror = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


def _train(
    network: ConvNet, images: torch.Tensor, labels: torch.Tensor, settings: dict[str, Any], device: torch.device
) -> tuple[ConvNet, dict[str, Any]]:
    """Adam with a one-cycle learning rate over ``epochs`` passes of shuffled mini-batches."""
    n = len(images)
    batch_size = min(settings["batch_size"], n)
    per_epoch = max(1, n // batch_size)  # drop the ragged tail: a batch of 1 breaks batch norm
    epochs = settings["epochs"]
    gen = generator(settings["seed"], "classifier-batches")
    images, labels = images.to(device), labels.to(device)
    # channels_last: oneDNN's and cuDNN's fast convolution layout (30-40 % faster on a CPU).
    network = network.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(network.parameters(), lr=settings["lr"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings["lr"], total_steps=epochs * per_epoch, pct_start=settings["pct_start"]
    )
    augment = settings["augment"]
    network.train()
    losses, correct, seen = [], 0, 0
    bar = progress.bar(epochs * per_epoch, "domain classifier", "batch")
    with bar, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive(settings["seed"], "classifier-dropout"))
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(device)
            epoch_loss, correct, seen = 0.0, 0, 0
            for i in range(per_epoch):
                idx = order[i * batch_size : (i + 1) * batch_size]
                x = _augment(to_model_range(images[idx]), augment["shift"], augment["flip"], gen)
                x = x.contiguous(memory_format=torch.channels_last)
                y = labels[idx]
                logits, _ = network(x)
                loss = F.cross_entropy(logits, y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                if not math.isfinite(loss.item()):
                    raise EvaluationError(f"domain classifier training diverged (loss {loss.item()}) in epoch {epoch + 1}")
                epoch_loss += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(idx)
                bar.update()
            losses.append(round(epoch_loss / seen, 6))
            log.info("domain classifier epoch %d/%d: loss %.4f, train accuracy %.4f", epoch + 1, epochs, losses[-1], correct / seen)
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=losses[-1], accuracy=f"{correct / seen:.4f}")
    network.eval()
    return network, {"train_loss": losses, "train_accuracy": round(correct / max(seen, 1), 6)}


__all__ = [
    "CACHE_ENV",
    "COLOUR_ARCH",
    "GREY_ARCH",
    "CNNClassifier",
    "ConvNet",
    "GaussianPosterior",
    "StackedDigitClassifier",
    "cache_directory",
    "classifier_from_checkpoint",
    "fit_domain_classifier",
    "load_domain_classifier",
]
