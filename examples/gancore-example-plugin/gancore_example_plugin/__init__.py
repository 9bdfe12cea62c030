"""A tiny architecture contributed from outside gancore, registered by entry point only.

``tiny_mlp`` is a one-hidden-layer GAN for vector data (e.g. the ring8 / grid25 toy sets):
small enough to train in seconds on a CPU, and a template for writing your own plugin.
"""

from __future__ import annotations

from torch import nn

from gancore import Architecture, hookimpl


class TinyGenerator(nn.Module):
    def __init__(self, dim: int, latent_dim: int, hidden: int):
        super().__init__()
        # Linear output: toy data lives in plain coordinates, not in [-1, 1].
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, z):
        return self.net(z)


class TinyDiscriminator(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).view(-1)  # raw logits, shape [B]


def build(shape: tuple[int, ...], latent_dim: int, hidden: int = 32):
    """``hidden``: width of the one hidden layer. gancore reads the options and their defaults
    from this signature (``hidden=32``), so they are written once."""
    if len(shape) != 1:
        raise ValueError(f"tiny_mlp builds vector data of shape (d,); got {tuple(shape)}")
    return TinyGenerator(int(shape[0]), int(latent_dim), int(hidden)), TinyDiscriminator(int(shape[0]), int(hidden))


@hookimpl
def gancore_architectures():
    return [
        Architecture(
            name="tiny_mlp",
            kinds={"vector"},
            build=build,
            description="one-hidden-layer MLP GAN for vector data (example third-party plugin)",
        )
    ]
