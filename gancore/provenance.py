"""The provenance card of a run's metrics: what a number was measured with, so that two numbers
are compared only when they were measured the same way.

FID moves with the feature network and its weights (66 against 5.33 for one model:
stylegan2-ada issue 99), the reference split (train against test: 21 against 14), the resizing
(6 points or more on FFHQ, clean-fid) and the sample size (Chong and Forsyth 2020). The card names
each: feature network, weights and their hash, resize, input range, n_real, n_generated, the
reference split, the seed, and the protocol with its version. ``evaluate.json``, the MLflow run
(tags ``provenance.*``), the Prefect artifact and every comparison carry it; :func:`differences`
says which field keeps two runs apart.

The card also names the software the features were computed with
(:func:`gancore.device.software`; training records its own). It is not a reason to refuse a
comparison: another install moves a run within the seeds' spread, which comparing over seeds
already allows for.
"""

from __future__ import annotations

from typing import Any

# Bump when a metric's computation changes: numbers of two versions are not comparable.
PROTOCOL = "gancore-evaluate"
VERSION = 2
FIELDS = (
    "feature_network",
    "weights",
    "resize",
    "input_range",
    "n_real",
    "n_generated",
    "reference_split",
    "seed",
    "protocol",
    "software",
)


def card(params: Any, prepared: Any, network: dict[str, str], n_real: int, n_generated: int, device: Any = None) -> dict[str, Any]:
    """The card of one evaluation; ``network``: the feature space's own description (its
    ``describe()``: feature network, weights, resize, input range); ``device``: where the features
    were computed (default: ``params.device``)."""
    from gancore.device import software  # torch: kept out of this module's import

    if params.evaluate.reference == "train":
        split = "training split"
    else:
        split = "test split" if prepared.meta.get("count_test") else "held-out split"
    max_real = params.evaluate.max_real
    return {
        **{field: network[field] for field in ("feature_network", "weights", "resize", "input_range")},
        "n_real": int(n_real),
        "n_generated": int(n_generated),
        "reference_split": f"{prepared.meta.get('name')} {split}"
        + (f", a seeded subset of {max_real}" if max_real and n_real >= max_real else ""),
        "seed": int(params.seed),
        "protocol": f"{PROTOCOL} v{VERSION}",
        "software": software(params.device if device is None else device),
    }


# What must agree for two runs' numbers to be ranked: every field but the seed (runs over seeds
# are the very comparison a sweep makes; the seed is on the card to reproduce a number) and the
# software (its rounding moves a run within the seeds' spread, see above).
COMPARABLE = tuple(f for f in FIELDS if f not in ("seed", "software"))


def differences(a: dict[str, Any] | None, b: dict[str, Any] | None, fields: tuple[str, ...] = COMPARABLE) -> list[str]:
    """The fields in which two cards differ (a missing card differs in every field)."""
    if not a or not b:
        return ["provenance (a run without a card)"]
    return [f"{f}: {a.get(f)!r} vs {b.get(f)!r}" for f in fields if a.get(f) != b.get(f)]
