"""Hook specifications: the one place that says what a gancore plugin may implement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pluggy

PROJECT = "gancore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

if TYPE_CHECKING:
    from gancore.registry import Architecture


@hookspec
def gancore_architectures() -> Iterable[Architecture]:
    """Return the architectures this plugin provides.

    Each item is a :class:`gancore.Architecture`. ``build(shape, latent_dim, **options)`` must
    return ``(generator, discriminator)``: the generator maps ``z: [B, latent_dim]`` to
    ``[B, *shape]`` (images in [-1, 1]); the discriminator maps ``[B, *shape]`` to raw logits
    ``[B]`` or ``[B, 1]``.
    """
    raise NotImplementedError  # a specification: plugins implement it
