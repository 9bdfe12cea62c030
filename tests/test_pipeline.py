"""End to end through the CLI: prepare -> train -> sample -> evaluate -> diagnose, offline, CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gancore.cli import main
from helpers import REPO

PARAMS = str(REPO / "params.yaml")

RING = [
    "data.n_train=4000",
    "data.n_test=2000",
    "train.steps=300",
    "train.batch_size=128",
    "train.checkpoint_every=100",
    "train.log_every=10",
    "tracking.enabled=false",
    "mixture.enabled=false",
]
IMAGES = [
    "model.arch=dcgan",
    "model.latent_dim=32",
    "model.options.width=16",
    "data.n_train=1024",
    "data.n_test=512",
    "data.classifier_epochs=1",
    "train.steps=15",
    "train.batch_size=32",
    "train.checkpoint_every=10",
    "train.log_every=5",
    "sample.n=300",
    "evaluate.max_real=512",
    "diagnose.ndb_bins=10",
    "tracking.enabled=false",
    "mixture.enabled=false",
]


def run_all(out: Path, overrides: list[str]) -> None:
    sets = [a for o in overrides for a in ("-S", o)]
    for stage in ("prepare", "train", "sample", "evaluate", "diagnose"):
        assert main([stage, "--params", PARAMS, "--out", str(out), *sets]) == 0, stage


def check_outputs(out: Path, modes_total: int | None) -> tuple[dict, dict]:
    for rel in (
        "data/prepared/data.pt",
        "data/prepared/meta.json",
        "models/generator.pt",
        "models/discriminator.pt",
        "samples/samples.pt",
        "samples/samples.png",
        "metrics/train_log.csv",
        "metrics/evaluate.json",
        "metrics/diagnose.json",
    ):
        assert (out / rel).is_file(), rel
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    gen = torch.load(out / "models/generator.pt", weights_only=True)
    assert {"state_dict", "arch", "options", "latent_dim", "shape"} <= set(gen)
    evaluate = json.loads((out / "metrics/evaluate.json").read_text())
    diagnose = json.loads((out / "metrics/diagnose.json").read_text())
    for key in ("is_mean", "is_std", "kl_divergence", "js_divergence", "js_distance", "fid", "precision", "recall", "density", "coverage"):
        assert key in evaluate, key
    assert 0.0 <= evaluate["js_divergence"] <= math.log(2) + 1e-12
    assert evaluate["js_distance"] == pytest.approx(math.sqrt(evaluate["js_divergence"]))
    for key in ("modes_total", "modes_covered", "high_quality_fraction", "mode_kl", "ndb", "ndb_js", "verdict", "evidence"):
        assert key in diagnose, key
    assert diagnose["modes_total"] == modes_total
    assert 0 <= diagnose["modes_covered"] <= modes_total
    assert diagnose["verdict"] in {"healthy", "partial_collapse", "complete_collapse", "vanishing_gradients", "not_converged"}
    return evaluate, diagnose


@pytest.mark.slow
def test_ring8_pipeline(tmp_path):
    run_all(tmp_path, RING)
    evaluate, diagnose = check_outputs(tmp_path, modes_total=8)
    assert 1.0 <= evaluate["is_mean"] <= 8.0 + 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("dataset, modes", [("mnist", 10), ("stacked_mnist", 1000)])
def test_image_pipeline(tmp_path, dataset, modes):
    run_all(tmp_path, [f"data.name={dataset}", *IMAGES])
    evaluate, _ = check_outputs(tmp_path, modes_total=modes)
    assert 1.0 <= evaluate["is_mean"] <= modes + 1e-9
