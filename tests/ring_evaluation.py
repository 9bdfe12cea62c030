"""Prepared ring8 data and samples written directly for the evaluate tests (no training), so that
every expected value follows from how they were drawn: sigma 0.01 with neighbouring centres 77
sigma apart makes the Gaussian posterior one-hot to within exp(-2500)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gancore.config import Params
from gancore.data.prepared import PreparedData, save_prepared
from gancore.layout import Layout
from helpers import ring8_centers

K = 8
SIGMA = 0.01
CENTERS = torch.tensor(ring8_centers(), dtype=torch.float64)
N = 2500  # the 2D protocol's sample count; also the real held-out count here
SPLITS = 10
LOG2 = math.log(2)


def ring_points(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return (CENTERS[labels] + SIGMA * torch.randn(len(labels), 2, generator=gen, dtype=torch.float64)).float()


def make_ring8(root: Path, test_labels: torch.Tensor, seed: int = 0) -> Layout:
    """Prepared ring8 data (the contract's meta) with the given held-out mode labels."""
    from gancore.classifiers.domain import fit_domain_classifier

    layout = Layout(root)
    gen = torch.Generator().manual_seed(seed)
    train_labels = torch.randint(K, (1000,), generator=gen)
    meta = {
        "name": "ring8",
        "kind": "vector",
        "shape": [2],
        "count": 1000,
        "count_test": len(test_labels),
        "value_range": [-1.04, 1.04],
        "storage": "float32",
        "seed": seed,
        "modes": {"count": K, "definition": "index of the generating centre", "centers": CENTERS.tolist(), "sigma": SIGMA},
        "raw_sha256": {},
    }
    data = PreparedData(meta, ring_points(train_labels, gen), ring_points(test_labels, gen), train_labels, test_labels)
    # As `gan prepare` does: the domain classifier's description goes into meta.json.
    data.meta["classifier"] = fit_domain_classifier(data, ring_params(), layout.prepared)
    save_prepared(layout.prepared, data)
    return layout


def write_samples(layout: Layout, x: torch.Tensor) -> None:
    layout.samples.mkdir(parents=True, exist_ok=True)
    torch.save({"x": x, "seed": 0, "latent_dim": 16}, layout.samples / "samples.pt")


def ring_params(**evaluate) -> Params:
    return Params(device="cpu", data={"name": "ring8"}, evaluate={"splits": SPLITS, **evaluate})


def read_result(layout: Layout) -> dict:
    text = layout.evaluate_json.read_text()
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c} in evaluate.json"))
