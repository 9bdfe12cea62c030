"""The networks of PacGAN's 2D experiments (Lin et al. 2018; fjxmlzn/PacGAN,
``synthetic_data_experiments``), for vector data.

* generator: ``depth`` hidden layers of ``hidden`` units (400 x 4 in the paper), each linear without
  bias, batch norm, ReLU; then a linear layer to the data. The paper draws a 2-D z
  (``model.latent_dim: 2``).
* discriminator: ``d_depth`` maxout layers (200 units x 3, 5 pieces each), then one logit.
* weights ~ N(0, 0.02^2), biases 0 (the paper's TF initialisers); batch-norm scales 1.

The paper trains with Adam (lr 1e-4, beta1 0.8), 100 packed examples a step, for 400 epochs of
100,000 points: ``-S model.arch=pacgan -S model.latent_dim=2 -S train.lr_g=0.0001 -S train.lr_d=0.0001
-S train.beta1=0.8 -S train.batch_size=100 -S mixture.enabled=false`` (and a GPU for the 400k steps).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gancore import Architecture, hookimpl


class Maxout(nn.Module):
    """A linear layer to ``out * pieces`` units, the maximum over each group of ``pieces``."""

    def __init__(self, width: int, out: int, pieces: int):
        super().__init__()
        self.out, self.pieces = out, pieces
        self.linear = nn.Linear(width, out * pieces)

    def forward(self, x):
        return self.linear(x).view(x.shape[0], self.out, self.pieces).max(dim=2).values


class PacGANGenerator(nn.Module):
    def __init__(self, dims: int, latent_dim: int, hidden: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, dims))
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class PacGANDiscriminator(nn.Module):
    def __init__(self, dims: int, hidden: int, depth: int, pieces: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = dims
        for _ in range(depth):
            layers.append(Maxout(width, hidden, pieces))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).view(-1)


@torch.no_grad()
def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build(
    shape: tuple[int, ...], latent_dim: int, hidden: int = 400, depth: int = 4, d_hidden: int = 200, d_depth: int = 3, pieces: int = 5
) -> tuple[nn.Module, nn.Module]:
    """PacGAN's 2D networks (defaults: the paper's sizes) for vector data of any dimension."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"pacgan builds vector data (d,); got shape {shape}")
    if min(int(hidden), int(depth), int(d_hidden), int(d_depth), int(pieces)) < 1:
        raise ValueError("pacgan needs hidden, depth, d_hidden, d_depth and pieces >= 1")
    generator = PacGANGenerator(math.prod(shape), int(latent_dim), int(hidden), int(depth))
    discriminator = PacGANDiscriminator(math.prod(shape), int(d_hidden), int(d_depth), int(pieces))
    _init(generator)
    _init(discriminator)
    return generator, discriminator


@hookimpl
def gancore_architectures():
    return [
        Architecture(
            name="pacgan",
            kinds={"vector"},
            build=build,
            description="PacGAN's 2D networks: G 4x400 linear-BN-ReLU, D 3x200 maxout (5 pieces); the paper uses a 2-D z",
        )
    ]
