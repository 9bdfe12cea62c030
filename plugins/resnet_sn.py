"""SNGAN's ResNet pair (Miyato et al. 2018) at 32 and 64 pixels.

Generator: linear projection of z to a 4x4 map, residual up-sampling blocks (batch norm, ReLU,
nearest 2x up-sampling, 3x3 convolutions; 3 blocks for 32 pixels, 4 for 64), then batch norm,
ReLU, a 3x3 convolution and tanh. Discriminator: every weight spectrally normalised; an
"optimised" first block (convolution before activation), down-sampling residual blocks with
average pooling until 8x8, two plain residual blocks, ReLU, global sum pooling and a linear
layer. Channels stay at ``width`` throughout, as in the CIFAR-10 model of the paper.
Initialisation follows the reference code: Xavier-uniform, gain sqrt(2) inside residual branches
and 1 for shortcuts and the ends.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gancore import Architecture, hookimpl
from gancore_plugins import log2_steps, require_shape, spectral_norm_

SIZES = (32, 64)
_RESIDUAL_GAIN = math.sqrt(2.0)


def _xavier(module: nn.Conv2d | nn.Linear, gain: float) -> nn.Module:
    nn.init.xavier_uniform_(module.weight, gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class GBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        # Every convolution here is followed, directly or through the shortcut sum and later
        # 1x1 shortcuts, by a batch norm that removes per-channel constants: biases would be
        # dead parameters (zero gradient), so there are none.
        self.b1 = nn.BatchNorm2d(in_ch)
        self.c1 = _xavier(nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), _RESIDUAL_GAIN)
        self.b2 = nn.BatchNorm2d(out_ch)
        self.c2 = _xavier(nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), _RESIDUAL_GAIN)
        self.sc = _xavier(nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False), 1.0)

    def forward(self, x):
        h = F.interpolate(F.relu(self.b1(x)), scale_factor=2, mode="nearest")
        h = self.c2(F.relu(self.b2(self.c1(h))))
        return h + self.sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResNetGenerator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, width: int):
        super().__init__()
        channels, size, _ = shape
        self.width = width
        self.l1 = _xavier(nn.Linear(latent_dim, 4 * 4 * width), 1.0)
        self.blocks = nn.Sequential(*[GBlock(width, width) for _ in range(log2_steps(4, size))])
        self.b_out = nn.BatchNorm2d(width)
        self.c_out = _xavier(nn.Conv2d(width, channels, 3, 1, 1), 1.0)

    def forward(self, z):
        h = self.l1(z).view(z.shape[0], self.width, 4, 4)
        h = self.blocks(h)
        return torch.tanh(self.c_out(F.relu(self.b_out(h))))


class DBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.c1 = _xavier(nn.Conv2d(in_ch, out_ch, 3, 1, 1), _RESIDUAL_GAIN)
        self.c2 = _xavier(nn.Conv2d(out_ch, out_ch, 3, 1, 1), _RESIDUAL_GAIN)
        self.sc = _xavier(nn.Conv2d(in_ch, out_ch, 1, 1, 0), 1.0) if (in_ch != out_ch or downsample) else None

    def forward(self, x):
        h = self.c2(F.relu(self.c1(F.relu(x))))
        s = x if self.sc is None else self.sc(x)
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class OptimizedDBlock(nn.Module):
    """First block: no activation before the first convolution (the input is pixels)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.c1 = _xavier(nn.Conv2d(in_ch, out_ch, 3, 1, 1), _RESIDUAL_GAIN)
        self.c2 = _xavier(nn.Conv2d(out_ch, out_ch, 3, 1, 1), _RESIDUAL_GAIN)
        self.sc = _xavier(nn.Conv2d(in_ch, out_ch, 1, 1, 0), 1.0)

    def forward(self, x):
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.sc(F.avg_pool2d(x, 2))


class ResNetDiscriminator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], width: int):
        super().__init__()
        channels, size, _ = shape
        n_down = log2_steps(8, size)  # 32 -> 8 in two halvings, 64 -> 8 in three
        blocks: list[nn.Module] = [OptimizedDBlock(channels, width)]
        blocks += [DBlock(width, width, downsample=True) for _ in range(n_down - 1)]
        blocks += [DBlock(width, width, downsample=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.l_out = _xavier(nn.Linear(width, 1), 1.0)
        spectral_norm_(self)

    def forward(self, x):
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.l_out(h).view(-1)


def build(shape: tuple[int, ...], latent_dim: int, width: int = 128) -> tuple[nn.Module, nn.Module]:
    """``width``: channels in every block (the paper's CIFAR-10 model: 128)."""
    image = require_shape("resnet_sn", shape, SIZES)
    if int(width) < 1:
        raise ValueError(f"resnet_sn option width must be >= 1; got {width}")
    return ResNetGenerator(image, int(latent_dim), int(width)), ResNetDiscriminator(image, int(width))


@hookimpl
def gancore_architectures():
    return [
        Architecture(
            name="resnet_sn",
            kinds={"image"},
            build=build,
            description="SNGAN ResNet (Miyato 2018): residual generator with batch norm, spectrally normalised residual discriminator",
            shapes=tuple((c, s, s) for s in SIZES for c in (1, 3)),
        )
    ]
