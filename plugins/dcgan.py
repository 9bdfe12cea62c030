"""DCGAN (Radford et al. 2015) at 28, 32 and 64 pixels.

The generator treats z as a 1x1 map and projects it with a transposed convolution to a 4x4 start
(7x7 for 28 pixels, so that 7 -> 14 -> 28 needs no cropping), then doubles the side with
stride-2 transposed convolutions, halving the channels; batch norm + ReLU between, tanh out.
The discriminator mirrors it with stride-2 convolutions and leaky ReLU and ends in one valid
convolution over the last map. Using a convolution for the projection keeps batch norm 2D, so the
generator also trains at batch size 1.
"""

from __future__ import annotations

from torch import nn

from gancore import Architecture, hookimpl
from gancore_plugins import LEAKY_SLOPE, dcgan_init_, log2_steps, require_shape, spectral_norm_

SIZES = (28, 32, 64)


def _start(size: int) -> int:
    return 7 if size == 28 else 4


class DCGANGenerator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, width: int):
        super().__init__()
        channels, size, _ = shape
        start = _start(size)
        n_up = log2_steps(start, size)
        ch = width * 2 ** (n_up - 1)
        # Convolutions feeding batch norm carry no bias: batch norm would cancel it.
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, start, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        dcgan_init_(self)

    def forward(self, z):
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], width: int, batch_norm: bool, spectral_norm: bool):
        super().__init__()
        channels, size, _ = shape
        batch_norm = batch_norm and not spectral_norm
        n_down = log2_steps(_start(size), size)
        # The first layer sees raw pixels: no batch norm there (Radford et al.).
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE, True)]
        ch = width
        for _ in range(n_down - 1):
            layers.append(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(ch * 2))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, True))
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, _start(size), 1, 0))
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)
        if spectral_norm:
            spectral_norm_(self)

    def forward(self, x):
        return self.net(x).view(-1)


def build(
    shape: tuple[int, ...],
    latent_dim: int,
    width: int = 64,
    d_batch_norm: bool = True,
    spectral_norm: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """``width``: channels next to the image (they double with every halving of the side);
    ``d_batch_norm``: batch norm in the discriminator; ``spectral_norm``: in the discriminator
    only, which then has no batch norm. The options' defaults are these keyword defaults."""
    image = require_shape("dcgan", shape, SIZES)
    if int(width) < 1:
        raise ValueError(f"dcgan option width must be >= 1; got {width}")
    generator = DCGANGenerator(image, int(latent_dim), int(width))
    discriminator = DCGANDiscriminator(image, int(width), bool(d_batch_norm), bool(spectral_norm))
    return generator, discriminator


@hookimpl
def gancore_architectures():
    return [
        Architecture(
            name="dcgan",
            kinds={"image"},
            build=build,
            description="DCGAN (Radford 2015): transposed-conv generator with batch norm, strided-conv discriminator",
            shapes=tuple((c, s, s) for s in SIZES for c in (1, 3)),
        )
    ]
