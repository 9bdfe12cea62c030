"""Fully connected GAN (Goodfellow et al. 2014) for 2D toy data and small images.

Vectors come out of a linear last layer, unbounded, because the toy protocols place their modes
in plain coordinates (the grid reaches +-4). Images are flattened for the discriminator and come
out of the generator through tanh, in [-1, 1].

The generator's weights start as He et al. (2015) set them for its activation (normal, variance
2 / fan_in), which keeps the latent's spread through every layer: the generated points start
spread over every direction, at a variance of about 1 (around an offset of up to about 2: the
ReLU features' mean). PyTorch's default (uniform, variance 1 / (3 fan_in)) shrinks the variance
about sixfold per layer: the points started within 0.05 of one spot, and the first steps grew
them along one line. In 2-D that line bends into the data within a few hundred steps; a 10-D
Gaussian part was still a line after 1,000 (nine of its ten variances 0.00, `gan diagnose`:
intra-mode collapse). The discriminator keeps PyTorch's.
"""

from __future__ import annotations

import math

from torch import nn

from gancore import Architecture, hookimpl
from gancore_plugins import ACTIVATIONS, activation, he_init_, spectral_norm_

INITS = ("he", "torch")


class MLPGenerator(nn.Module):
    def __init__(self, shape: tuple[int, ...], latent_dim: int, hidden: int, depth: int, act: str, batch_norm: bool, init: str = "he"):
        super().__init__()
        self.shape = tuple(shape)
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(depth):
            # A bias right before batch norm is cancelled by it and would get zero gradient.
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(activation(act))
            width = hidden
        layers.append(nn.Linear(width, math.prod(self.shape)))
        if len(self.shape) > 1:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        if init == "he":
            he_init_(self.net, act)

    def forward(self, z):
        return self.net(z).view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, shape: tuple[int, ...], hidden: int, depth: int, act: str, spectral_norm: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(shape)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), activation(act)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        if spectral_norm:
            spectral_norm_(self)

    def forward(self, x):
        return self.net(x).view(-1)


def build(
    shape: tuple[int, ...],
    latent_dim: int,
    hidden: int = 128,
    depth: int = 3,
    g_activation: str = "relu",
    d_activation: str = "leaky_relu",
    batch_norm: bool = False,
    spectral_norm: bool = False,
    init: str = "he",
) -> tuple[nn.Module, nn.Module]:
    """``hidden``-wide layers, ``depth`` of them in each network; ``batch_norm`` in the generator
    only (off by default, like the original MLP GAN), ``spectral_norm`` in the discriminator only;
    ``init`` the generator's starting weights: ``he`` (see above) or ``torch``, PyTorch's default,
    which this plugin used before the option existed (to reproduce or resume such a run).

    The options' defaults are these keyword defaults (the registry reads them from here).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError(f"mlp builds vectors (d,) or images (C, H, W); got shape {shape}")
    if int(hidden) < 1 or int(depth) < 1:
        raise ValueError(f"mlp needs hidden >= 1 and depth >= 1; got hidden={hidden}, depth={depth}")
    for name, value in (("g_activation", g_activation), ("d_activation", d_activation)):
        if value not in ACTIVATIONS:
            raise ValueError(f"mlp option {name}={value!r}; allowed: {', '.join(ACTIVATIONS)}")
    if init not in INITS:
        raise ValueError(f"mlp option init={init!r}; allowed: {', '.join(INITS)}")
    generator = MLPGenerator(shape, int(latent_dim), int(hidden), int(depth), g_activation, bool(batch_norm), init)
    discriminator = MLPDiscriminator(shape, int(hidden), int(depth), d_activation, bool(spectral_norm))
    return generator, discriminator


@hookimpl
def gancore_architectures():
    return [
        Architecture(
            name="mlp",
            kinds={"vector", "image"},
            build=build,
            description="fully connected GAN (Goodfellow 2014): linear output for vectors, tanh for images",
            # PyTorch's start, the generator's before the init option existed: those checkpoints resume under it
            legacy={"init": "torch"},
        )
    ]
