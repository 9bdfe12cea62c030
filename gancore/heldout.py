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


def steering_half(test: torch.Tensor) -> torch.Tensor:
    """The held-out examples that steer augmentation (signal held_out): every other one, which
    keeps both halves balanced however the split is ordered."""
    return test[0::2]


def measured_half(test: torch.Tensor) -> torch.Tensor:
    """The held-out examples a steered run's D is measured on: the ones it was never shown."""
    return test[1::2]


def held_out_steers(params: Any) -> bool:
    """Whether ``params`` train with augmentation steered by held-out examples."""
    a = params.augment
    return bool(parse_policy(a.policy)) and a.adaptive and a.signal == "held_out"
