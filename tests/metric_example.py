"""A metric as a contributor adds one (tests/test_catalogue.py registers it): the distance between
the feature means, with the registry's adapter."""

from __future__ import annotations

from typing import Any


def mean_gap(real: Any, generated: Any) -> float:
    return float((real.double().mean(0) - generated.double().mean(0)).norm())


def evaluate(inputs: Any) -> dict[str, Any]:
    return {"mean_gap": mean_gap(inputs.real_features, inputs.generated_features)}
