"""Which held-out (test-split) examples a run consulted while training, and which it never saw.

Augmentation steered by held-out examples (``augment.signal: held_out``) shows D every other
test example; the diagnosis and the collapse monitor measure that run's memorisation on the
others, so the train/held-out gap is never read off the examples p was steered by. (FID's
reference stays the whole test split: all that reaches training from it is the sign of one
comparison per ``augment.interval`` steps.)
"""

from __future__ import annotations

from typing import Any

import torch

from gancore.names import parse_policy

# D memorises when it calls at least this share more of its training examples real than of
# held-out ones: the diagnosis flags such a gap (when significant), and held-out-steered
# augmentation raises p while D's gap is above it (ADA's rule, with this as its target).
MEMORISATION_GAP = 0.1


def steering_half(test: torch.Tensor) -> torch.Tensor:
    """The held-out examples that steer augmentation (signal held_out): every other one, which
    keeps both halves balanced however the split is ordered."""
    return test[0::2]


def measured_half(test: torch.Tensor) -> torch.Tensor:
    """The held-out examples a steered run's D is measured on: the ones it was never shown."""
    return test[1::2]


def steering_problem(meta: dict[str, Any], n_test: int | None, need: int) -> str | None:
    """Why held-out examples cannot steer a D trained on data with ``meta`` and ``n_test`` test
    examples (None: not known, not checked), scoring ``need`` of them a step (train.batch_size x
    model.pack); None when they can.
    Training refuses such a run with this message; the diagnosis then proposes ADA's r_t."""
    if meta.get("own_test") is False:  # other parts' examples would look "unseen" to this part's D
        part = (meta.get("part") or {}).get("description", "a mixture part")
        return (
            f"held_out needs held-out examples of this part ({part}), and none of "
            "the test split falls in it; use augment.signal=r_t, or a partition whose parts all have test examples"
        )
    steering = None if n_test is None else len(range(0, n_test, 2))  # the size of steering_half
    if steering is not None and steering < need:
        return (
            f"held_out scores a batch of held-out examples per discriminator step: it needs at least {need} "
            f"(train.batch_size x model.pack), and the half of the test split that steers has {steering} (of {n_test}: "
            "the other half measures D's memorisation); raise data.n_test, lower train.batch_size, or use augment.signal=r_t"
        )
    return None


def held_out_steers(params: Any) -> bool:
    """Whether ``params`` train with augmentation steered by held-out examples."""
    a = params.augment
    return bool(parse_policy(a.policy)) and a.adaptive and a.signal == "held_out"
