"""The GAN objectives' mathematics, computed from raw discriminator logits (registered by name
in :mod:`gancore.losses`).

Every log-probability goes through ``softplus`` (``log(1 + e^x)``), never ``log(sigmoid(.))``:
with ``D = sigmoid(l)``, ``log D = -softplus(-l)`` and ``log(1 - D) = -softplus(l)``, which stay
finite (with finite gradients) at any logit, where ``sigmoid`` rounds to 0 or 1 and ``log`` then
returns ``-inf``.

Each loss is something to *minimise*: the discriminator's loss is ``d(l_real, l_fake)``, the
generator's ``g(l_fake)``. Logits may be ``[B]`` or ``[B, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.functional import relu, softplus


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
def minimax_d(l_real: Tensor, l_fake: Tensor) -> Tensor:
    # D maximises V, i.e. minimises -V.
    return -minimax_value(l_real, l_fake)


def minimax_g(l_fake: Tensor) -> Tensor:
    # G minimises E log(1 - D(G(z))): the saturating form of the reference objective.
    return -softplus(flat_logits(l_fake)).mean()


def non_saturating_g(l_fake: Tensor) -> Tensor:
    # G minimises -E log D(G(z)): same fixed point, strong gradients while D rejects the fakes.
    return softplus(-flat_logits(l_fake)).mean()


def wasserstein_d(l_real: Tensor, l_fake: Tensor) -> Tensor:
    return flat_logits(l_fake).mean() - flat_logits(l_real).mean()


def critic_g(l_fake: Tensor) -> Tensor:
    return -flat_logits(l_fake).mean()


def hinge_d(l_real: Tensor, l_fake: Tensor) -> Tensor:
    return relu(1 - flat_logits(l_real)).mean() + relu(1 + flat_logits(l_fake)).mean()


def least_squares_d(l_real: Tensor, l_fake: Tensor) -> Tensor:
    # Mao et al. 2017 with targets a=0 (fake), b=1 (real), c=1 (what G wants D to say).
    return 0.5 * (flat_logits(l_real) - 1).pow(2).mean() + 0.5 * flat_logits(l_fake).pow(2).mean()


def least_squares_g(l_fake: Tensor) -> Tensor:
    return 0.5 * (flat_logits(l_fake) - 1).pow(2).mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
    share: tuple[int, int] | None = None,
) -> Tensor:
    """Gulrajani et al. 2017: E[(||grad_x critic(x_hat)||_2 - 1)^2] at random interpolates.

    ``x_hat = a * real + (1 - a) * fake`` with one ``a ~ U[0, 1]`` per example, drawn from
    ``generator`` so that a resumed run draws the same ones. ``share``: ``(examples, start)`` when
    ``real`` is one process's rows ``start...`` of a batch of ``examples``: the whole batch's
    weights are drawn and this share's taken, so that every rank has its own and the stream stays
    in step with one process's. The graph is kept (``create_graph``) so the penalty trains the
    critic.
    """
    real = real.detach().float()
    fake = fake.detach().float()
    total, start = share if share is not None else (real.shape[0], 0)
    alpha = torch.rand((total,) + (1,) * (real.dim() - 1), generator=generator, device=real.device)[start : start + real.shape[0]]
    # Element-wise ops keep real's memory format (channels_last for images), so the critic sees
    # the same layout as in its other calls.
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = flat_logits(critic(x_hat)).float()
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1)
    return (norm - 1).pow(2).mean()
