"""``gan probe``: the trained discriminator as a feature extractor, scored by a linear probe.

A GAN's discriminator is itself a classifier: its penultimate layer has learned features of the
data. The probe takes them for labelled train and test images, fits a multinomial logistic
regression on ``probe.labels_per_class`` labelled examples per class, and reports its test
accuracy beside two controls measured the same way, on the same labels, with the same classifier:

* ``pixels``: the raw pixels (in model range);
* ``random``: the same architecture's discriminator at its random initialisation.

Features are the input of the discriminator's output layer, flattened: the last layer with
weights to run in its forward (forward pre-hooks: no plugin change; spectrally normalised layers
count as layers, their parametrizations do not). A plugin's discriminator whose output layer is
not its last layer to run (a projection discriminator's class embedding, say) offers
``features(x)`` instead. A packing
discriminator (``model.pack = m``) sees each image as m copies of itself. The probe needs class
labels (exit 2 otherwise) and a single discriminator (not a mixture).

For reference (``shared/reference.md``): DCGAN's discriminator features reached 82.8 % on CIFAR-10
with an L2-SVM (Radford et al. 2015, features of a D trained on ImageNet, a different protocol).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from gancore import seeds
from gancore.config import Params, ParamsError
from gancore.data.prepared import PreparedData, load_prepared, to_model_range
from gancore.device import resolve_device
from gancore.errors import GanCoreError
from gancore.io import read_json, write_json
from gancore.layout import Layout

BATCH = 500
POOL = 4
LBFGS_ITERATIONS = 200


def layers_with_weights(module: nn.Module) -> list[nn.Module]:
    """The modules of ``module`` that hold weights: parameters of their own, or a parametrized
    weight (``spectral_norm`` moves a layer's weight into a ``ParametrizationList``, whose forward
    takes no input and which is no layer)."""
    inside = {id(m) for p in module.modules() if isinstance(p, parametrize.ParametrizationList) for m in p.modules()}
    return [
        m
        for m in module.modules()
        if id(m) not in inside and (parametrize.is_parametrized(m) or any(True for _ in m.parameters(recurse=False)))
    ]


class LastLayerInput:
    """Hooks every layer with weights and keeps the input of the one that ran last in a forward:
    the output layer in the order the network runs, whatever the order its layers were declared in."""

    def __init__(self, module: nn.Module):
        layers = layers_with_weights(module)
        if not layers:
            raise GanCoreError(f"{type(module).__name__} has no layer with weights to take features before")
        self.name = type(module).__name__
        self.layer: nn.Module | None = None
        self.input: torch.Tensor | None = None
        self._hooks = [m.register_forward_pre_hook(self._seen) for m in layers]

    def _seen(self, layer: nn.Module, inputs: tuple[Any, ...]) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            self.layer, self.input = layer, inputs[0]

    def __call__(self, discriminator: nn.Module, x: torch.Tensor) -> torch.Tensor:
        self.layer = self.input = None
        discriminator(x)
        if self.input is None:
            raise GanCoreError(f"no layer with weights of {self.name} saw a tensor in its forward; give it a features(x) method")
        return self.input

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


def last_layer(discriminator: nn.Module, x: torch.Tensor) -> nn.Module:
    """The layer with weights that runs last when ``discriminator`` reads ``x`` (its output layer)."""
    grab = LastLayerInput(discriminator)
    try:
        with torch.no_grad():
            grab(discriminator, x)
    finally:
        grab.remove()
    assert grab.layer is not None
    return grab.layer


@torch.no_grad()
def features(discriminator: nn.Module, images: torch.Tensor, pack: int, device: torch.device) -> torch.Tensor:
    """Penultimate features [N, F] of ``discriminator`` for uint8 or model-range ``images``."""
    discriminator = discriminator.to(device).eval()
    own = getattr(discriminator, "features", None)
    grab: LastLayerInput | None = None
    if callable(own):
        read: Callable[[torch.Tensor], torch.Tensor] = own
    else:
        grab = LastLayerInput(discriminator)
        read = partial(grab, discriminator)
    out = []
    try:
        for start in range(0, len(images), BATCH):
            x = to_model_range(images[start : start + BATCH]).to(device)
            if pack > 1:
                x = x.repeat(1, pack, *([1] * (x.dim() - 2)))
            out.append(_flat(read(x)))
    finally:
        if grab is not None:
            grab.remove()
    return torch.cat(out)


def _flat(h: torch.Tensor) -> torch.Tensor:
    """Feature maps max-pooled to at most 4x4 (as the DCGAN paper pools its), then flattened."""
    h = h.detach().float()
    if h.dim() == 4 and h.shape[-1] > POOL:
        h = nn.functional.adaptive_max_pool2d(h, POOL)
    return h.flatten(1).cpu()


def balanced_subset(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` examples of every class (all of them for None), seeded."""
    if per_class is None:
        return torch.arange(len(labels))
    gen = seeds.generator(seed, f"probe/labels{per_class}")
    picks = []
    for c in torch.unique(labels):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            raise ParamsError([("probe.labels_per_class", f"{per_class} exceeds the {len(idx)} training examples of class {int(c)}")])
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(picks).sort().values


def logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on standardised features, L2-regularised, fitted to the
    optimum with L-BFGS (the loss is convex): (weights, bias, standardisation) to apply later."""
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1])
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=LBFGS_ITERATIONS,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach(), torch.stack([mean, std])


def accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, l2: float) -> float:
    classes = int(max(train_y.max(), test_y.max())) + 1
    w, b, norm = logistic_regression(train_x, train_y, classes, l2)
    predicted = (((test_x.float() - norm[0]) / norm[1]) @ w + b).argmax(1)
    return float((predicted == test_y).double().mean())


def _probed(path: Path) -> bool:
    """``path`` holds a probe's result (not the disabled note)."""
    try:
        return bool(read_json(path).get("enabled")) if path.is_file() else False
    except (OSError, ValueError, AttributeError):
        return False


def probe(params: Params, layout: Layout) -> dict[str, Any]:
    """The probe stage: ``metrics/probe.json`` (see the module doc); disabled, it writes why."""
    started = time.perf_counter()
    out = layout.probe_json
    if not params.probe.enabled:
        # the DVC stage's output exists either way; the note is printed too (the summary alone said "enabled False")
        note = "probe.enabled is false: set it to true (-S probe.enabled=true, with mixture.enabled=false) to probe the discriminator"
        if _probed(out):
            # `gan probe` without the setting overwrote minutes of probing with this note (DVC
            # removes the output before the stage runs, so there it is the note either way).
            when = datetime.fromtimestamp(out.stat().st_mtime).isoformat(sep=" ", timespec="seconds")
            note += f"; {out} keeps the probe made at {when}, of the discriminator of that time"
        else:
            write_json(out, {"enabled": False, "note": note})
        return {"enabled": False, "note": note}
    from gancore.modelio import build_pair, load_discriminator, read_model_file

    data: PreparedData = load_prepared(layout.prepared)
    if data.train_labels is None or data.test_labels is None:
        raise ParamsError(
            [("probe.enabled", f"the probe needs class labels, and {data.meta.get('name')} has none; set probe.enabled=false")]
        )
    if layout.mixture.exists() and not params.mixture.enabled:
        # The model on disk is at fault, not the setting the error named (already false).
        raise GanCoreError(
            f"{layout.models} holds a mixture of GANs ({layout.mixture}), one discriminator per part, and the probe needs "
            "one: train a single GAN here first (`gan train -S mixture.enabled=false`)"
        )
    if layout.mixture.exists():
        raise ParamsError(
            [
                (
                    "probe.enabled",
                    "the probe needs one discriminator, and mixture.enabled trained one per part; "
                    "probe a single GAN (mixture.enabled=false)",
                )
            ]
        )
    device = resolve_device(params.device)
    record = read_model_file(layout.discriminator)
    pack = int(record.get("pack", 1))
    trained = load_discriminator(layout.discriminator, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.derive(params.seed, "probe/random-init"))
        _, random = build_pair(record["arch"], tuple(record["shape"]), record["latent_dim"], record["options"], pack)
    spaces = {
        "discriminator": lambda x: features(trained, x, pack, device),
        "pixels": lambda x: to_model_range(x).flatten(1),
        "random": lambda x: features(random, x, pack, device),
    }
    embedded = {name: (fn(data.train), fn(data.test)) for name, fn in spaces.items()}
    result: dict[str, Any] = {
        "enabled": True,
        "feature_dim": {name: int(v[0].shape[1]) for name, v in embedded.items()},
        "classifier": f"multinomial logistic regression, L2 {params.probe.l2} on standardised features (L-BFGS)",
        "test_examples": len(data.test),
        "labels_per_class": {},
    }
    for budget in params.probe.labels_per_class:
        per_class = None if budget == "all" else int(budget)
        idx = balanced_subset(data.train_labels, per_class, params.seed)
        labels = data.train_labels[idx]
        result["labels_per_class"][str(budget)] = {
            name: accuracy(train[idx], labels, test, data.test_labels, params.probe.l2) for name, (train, test) in embedded.items()
        } | {"labelled_examples": len(idx)}
    write_json(out, result)
    summary: dict[str, Any] = {"feature_dim": result["feature_dim"]["discriminator"]}
    for budget, accs in result["labels_per_class"].items():
        for name in spaces:
            summary[f"{name}@{budget}"] = round(accs[name], 4)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary
