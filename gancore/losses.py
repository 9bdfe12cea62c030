"""The losses, one :class:`LossSpec` each: their objectives and what the diagnostics may assume.

The parameters' choices (``loss.name``), the Prefect form, the trainer, the diagnosis (sigmoid D,
saturating G), ``gan losses`` and the README read :data:`REGISTRY`. Adding a loss is its two
objectives (in :mod:`gancore.objectives` or a module of its own) and one entry here.

Light on purpose (no torch): parameter validation and ``gan --help`` import it. The objectives are
named as ``"module:function"`` and imported when a loss is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gancore.lazy import by_name, modules, resolve

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


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
    ``boundary``: D's output where its call changes from fake to real, the threshold of r_t =
    E[sign(D(x) - boundary)] and of the diagnosis's "called real": 0 for a logistic or hinge D,
    halfway between the targets for least squares (0 fake, 1 real), and None for a critic whose
    loss does not change when a constant is added to its output (Wasserstein with its penalty):
    training fixes no offset, so the sign of its output means nothing.
    """

    name: str
    d_objective: str  # "module:function"; (l_real, l_fake) -> D's loss to minimise
    g_objective: str  # "module:function"; l_fake -> G's loss to minimise
    sigmoid: bool = False
    saturating: bool = False
    penalty: bool = False
    boundary: float | None = 0.0

    @property
    def d(self) -> Any:
        return resolve(self.d_objective)

    @property
    def g(self) -> Any:
        return resolve(self.g_objective)


_O = "gancore.objectives:"
REGISTRY: dict[str, LossSpec] = by_name(
    LossSpec("minimax", _O + "minimax_d", _O + "minimax_g", sigmoid=True, saturating=True),
    LossSpec("non_saturating", _O + "minimax_d", _O + "non_saturating_g", sigmoid=True),
    LossSpec("wasserstein_gp", _O + "wasserstein_d", _O + "critic_g", penalty=True, boundary=None),
    LossSpec("hinge", _O + "hinge_d", _O + "critic_g"),
    LossSpec("least_squares", _O + "least_squares_d", _O + "least_squares_g", boundary=0.5),
)


def spec(name: str | None) -> LossSpec | None:
    """The registry entry of ``name``; None for a name it does not hold (an old run's log)."""
    return REGISTRY.get(name or "")


def is_sigmoid(name: str | None) -> bool:
    found = spec(name)
    return bool(found and found.sigmoid)


def is_saturating(name: str | None) -> bool:
    found = spec(name)
    return bool(found and found.saturating)


def boundary(name: str | None) -> float | None:
    """D's decision boundary under loss ``name`` (see :class:`LossSpec`); 0 for a name the registry
    does not hold."""
    found = spec(name)
    return found.boundary if found else 0.0


def without_boundary() -> tuple[str, ...]:
    """The losses whose D has no decision boundary, so no r_t and no "called real"."""
    return tuple(name for name, s in REGISTRY.items() if s.boundary is None)


def penalty_problem(name: str | None, arch: str, batch_normalised: bool, options: dict[str, Any]) -> str | None:
    """Why loss ``name``'s gradient penalty cannot go with architecture ``arch``'s discriminator, or
    None. The penalty asks for a unit gradient of D at each sample on its own, which a
    batch-normalised D has not: its output at one sample moves with the rest of the batch, and the
    penalty's interpolates move its running statistics (Gulrajani et al. 2017, section 4: no batch
    norm in the critic). ``options``: the architecture's resolved options, for the hint."""
    found = spec(name)
    if not (found and found.penalty and batch_normalised):
        return None
    hint = (
        "set model.options.d_batch_norm=false" if "d_batch_norm" in options else "use an architecture whose discriminator has no batch norm"
    )
    return f"{name}'s gradient penalty needs a discriminator without batch norm, and {arch}'s has it: {hint}, or use another loss"


def get_loss(name: str, gp_weight: float = 10.0) -> GanLoss:
    """The objective called ``name`` (``loss.name`` in params); ``gp_weight`` only where the loss
    has a gradient penalty."""
    found = spec(name)
    if found is None:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(REGISTRY)}")
    return GanLoss(name, found.d, found.g, gp_weight if found.penalty else 0.0)


def objective_modules() -> tuple[str, ...]:
    """The modules the objectives live in (what the trainer imports by name)."""
    return modules(r for s in REGISTRY.values() for r in (s.d_objective, s.g_objective))
