"""Built-in architecture plugins, one module per family.

They register through this project's ``[project.entry-points.gancore]`` exactly like a third-party
plugin would. This module holds the few layer helpers the families share.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

ACTIVATIONS = ("relu", "leaky_relu")
LEAKY_SLOPE = 0.2  # DCGAN's slope; also the usual choice for toy-data discriminators


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE)
    raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")


@torch.no_grad()
def he_init_(module: nn.Module, act: str) -> None:
    """He et al. 2015: linear weights ~ N(0, gain^2 / fan_in) for the activation ``act`` (ReLU's gain
    sqrt 2; leaky ReLU's sqrt(2 / (1 + slope^2))), biases 0. A batch norm resets the scale anyway."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if act == "relu":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.kaiming_normal_(m.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def spectral_norm_(module: nn.Module) -> nn.Module:
    """Spectrally normalise every conv and linear weight in ``module``, in place.

    Call it after initialising the weights: the power-iteration vectors are estimated from the
    weights as they are at this moment (one more iteration per training forward after that).
    """
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            _spectral_norm(m)
    return module


def require_shape(arch: str, shape: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[int, int, int]:
    """``shape`` as (C, H, W) if it is a square image of a supported side, else a clear ValueError."""
    dims = tuple(int(d) for d in shape)
    if len(dims) != 3 or dims[0] < 1 or dims[1] != dims[2] or dims[1] not in sizes:
        raise ValueError(f"{arch} builds square images (C, S, S) with S in {', '.join(map(str, sizes))}; got shape {dims}")
    return dims[0], dims[1], dims[2]


def log2_steps(start: int, size: int) -> int:
    """How many doublings take ``start`` to ``size`` (both already validated)."""
    return int(round(math.log2(size // start)))


@torch.no_grad()
def dcgan_init_(module: nn.Module) -> None:
    """Radford et al. 2015: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
