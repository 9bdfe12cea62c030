"""GAN objectives, computed from raw discriminator logits.

Every log-probability goes through ``softplus`` (``log(1 + e^x)``), never ``log(sigmoid(.))``:
with ``D = sigmoid(l)``, ``log D = -softplus(-l)`` and ``log(1 - D) = -softplus(l)``, which stay
finite (with finite gradients) at any logit, where ``sigmoid`` rounds to 0 or 1 and ``log`` then
returns ``-inf``.

Each loss is something to *minimise*: the discriminator's loss is ``d(l_real, l_fake)``, the
generator's ``g(l_fake)``. Logits may be ``[B]`` or ``[B, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.functional import relu, softplus

from gancore.names import LOSSES


def flat_logits(logits: Tensor) -> Tensor:
    """Discriminator output ``[B]`` or ``[B, 1]`` as ``[B]``; any other shape is an error."""
    if logits.dim() == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    if logits.dim() != 1:
        raise ValueError(f"discriminator logits must have shape [B] or [B, 1], got {list(logits.shape)}")
    return logits


def minimax_value(l_real: Tensor, l_fake: Tensor) -> Tensor:
    """V(D, G) = E log D(x) + E log(1 - D(G(z))) on a batch (Goodfellow et al. 2014)."""
    return -softplus(-flat_logits(l_real)).mean() - softplus(flat_logits(l_fake)).mean()


# -- the five objectives ----------------------------------------------------------------------
def _minimax_d(l_real: Tensor, l_fake: Tensor) -> Tensor:
    # D maximises V, i.e. minimises -V.
    return -minimax_value(l_real, l_fake)


def _minimax_g(l_fake: Tensor) -> Tensor:
    # G minimises E log(1 - D(G(z))): the saturating form of the reference objective.
    return -softplus(flat_logits(l_fake)).mean()


def _non_saturating_g(l_fake: Tensor) -> Tensor:
    # G minimises -E log D(G(z)): same fixed point, strong gradients while D rejects the fakes.
    return softplus(-flat_logits(l_fake)).mean()


def _wasserstein_d(l_real: Tensor, l_fake: Tensor) -> Tensor:
    return flat_logits(l_fake).mean() - flat_logits(l_real).mean()


def _critic_g(l_fake: Tensor) -> Tensor:
    return -flat_logits(l_fake).mean()


def _hinge_d(l_real: Tensor, l_fake: Tensor) -> Tensor:
    return relu(1 - flat_logits(l_real)).mean() + relu(1 + flat_logits(l_fake)).mean()


def _least_squares_d(l_real: Tensor, l_fake: Tensor) -> Tensor:
    # Mao et al. 2017 with targets a=0 (fake), b=1 (real), c=1 (what G wants D to say).
    return 0.5 * (flat_logits(l_real) - 1).pow(2).mean() + 0.5 * flat_logits(l_fake).pow(2).mean()


def _least_squares_g(l_fake: Tensor) -> Tensor:
    return 0.5 * (flat_logits(l_fake) - 1).pow(2).mean()


@dataclass(frozen=True)
class GanLoss:
    """A named pair of objectives; ``gp_weight > 0`` asks the trainer for a gradient penalty."""

    name: str
    d: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor], Tensor]
    gp_weight: float = 0.0


@dataclass(frozen=True)
class LossSpec:
    """One loss in the registry: its objectives and what the diagnostics may assume of it.

    ``sigmoid``: D is a sigmoid classifier trained on V (Goodfellow 2014), so D(x) = 1/2 and V =
    -log 4 at the equilibrium and D(G(z)) near 0 means the generator's gradients vanish; for other
    critics the logged "probabilities" are sigmoids of unbounded scores. ``saturating``: G's
    objective flattens where D rejects the fakes (the non-saturating one is its remedy).
    ``penalty``: the trainer adds a gradient penalty of weight ``loss.gp_weight``.
    """

    name: str
    d: Callable[[Tensor, Tensor], Tensor]
    g: Callable[[Tensor], Tensor]
    sigmoid: bool = False
    saturating: bool = False
    penalty: bool = False


# Adding a loss: its two objectives above, one entry here, and its name in ``names.LossName``
# (what params validate; tests/test_losses.py checks that the two agree).
REGISTRY: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("minimax", _minimax_d, _minimax_g, sigmoid=True, saturating=True),
        LossSpec("non_saturating", _minimax_d, _non_saturating_g, sigmoid=True),
        LossSpec("wasserstein_gp", _wasserstein_d, _critic_g, penalty=True),
        LossSpec("hinge", _hinge_d, _critic_g),
        LossSpec("least_squares", _least_squares_d, _least_squares_g),
    )
}


def spec(name: str | None) -> LossSpec | None:
    """The registry entry of ``name``; None for a name it does not hold (an old run's log)."""
    return REGISTRY.get(name or "")


def is_sigmoid(name: str | None) -> bool:
    found = spec(name)
    return bool(found and found.sigmoid)


def is_saturating(name: str | None) -> bool:
    found = spec(name)
    return bool(found and found.saturating)


def get_loss(name: str, gp_weight: float = 10.0) -> GanLoss:
    """The objective called ``name`` (``loss.name`` in params); ``gp_weight`` only where the loss
    has a gradient penalty."""
    found = spec(name)
    if found is None:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    return GanLoss(name, found.d, found.g, gp_weight if found.penalty else 0.0)


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gulrajani et al. 2017: E[(||grad_x critic(x_hat)||_2 - 1)^2] at random interpolates.

    ``x_hat = a * real + (1 - a) * fake`` with one ``a ~ U[0, 1]`` per example, drawn from
    ``generator`` so that a resumed run draws the same ones. The graph is kept (``create_graph``)
    so the penalty trains the critic.
    """
    real = real.detach().float()
    fake = fake.detach().float()
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, device=real.device)
    # Element-wise ops keep real's memory format (channels_last on CUDA), so the critic sees
    # the same layout as in its other calls.
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = flat_logits(critic(x_hat)).float()
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1)
    return (norm - 1).pow(2).mean()
