"""The metrics benchmark runs end to end (--tiny) and both sides compute the same quantities."""

import contextlib
import io
import json

import pytest
import torch

from helpers import import_benchmark

metrics_throughput = import_benchmark("metrics_throughput")

# One tiny_run (a session fixture) serves the module: keep its tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("metrics-benchmark")


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def tiny_run(tmp_path_factory):
    # In-process main() rather than a subprocess: the same code path, without paying for a
    # second interpreter's torch/torchmetrics/sklearn imports.
    out = tmp_path_factory.mktemp("bench") / "metrics.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert metrics_throughput.main(["--tiny", "--device", "cpu", "--json", str(out)]) == 0
    return stdout.getvalue(), json.loads(out.read_text())


def test_prints_side_by_side_table(tiny_run):
    stdout, _ = tiny_run
    assert "IS+FID end to end (small)" in stdout
    assert "IS+FID from features 400x32" in stdout
    assert "PRDC 300x300, 16-D, k=5 vs prdc" in stdout
    assert "ratio" in stdout


def test_timings_are_positive(tiny_run):
    _, result = tiny_run
    for side in ("ours", "torchmetrics"):
        for key in ("extract_s", "metrics_s", "total_s", "total_cpu_s"):
            assert result["images"][side][key] > 0
    assert result["features"]["ours_s"] > 0 and result["features"]["ref_s"] > 0
    assert result["prdc"]["ours_s"] > 0 and result["prdc"]["prdc_s"] > 0


def test_both_sides_agree(tiny_run):
    _, result = tiny_run
    # Same backbone, same images (or the same features): FID agrees up to torchmetrics
    # returning it in the features' dtype, float32 (relative rounding 6e-8).
    for section in ("images", "features"):
        ours, ref = result[section]["ours"], result[section]["torchmetrics"]
        assert ours["fid"] > 0
        assert ours["fid"] == pytest.approx(ref["fid"], rel=1e-6)
        # IS: torchmetrics cuts and shuffles its splits differently and reports the sample
        # std, so only the ranges can be compared: both in [1, number of classes].
        for mean, _ in (ours["is"], ref["is"]):
            assert 1.0 - 1e-9 <= mean <= 10
    # PRDC: the same definitions; prdc gets float32 features and rounds its distances to
    # float32, which at 300 points in 16-D flips no comparison.
    for key, value in result["prdc"]["prdc"].items():
        assert result["prdc"]["ours"][key] == pytest.approx(value, rel=1e-12)


def test_random_inception_backbone_builds_offline():
    # The full benchmark's backbone: torch-fidelity's InceptionV3 with random weights, no download.
    model = metrics_throughput.random_inception(seed=0)
    with torch.inference_mode():
        pool, logits = model(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8))
    assert pool.shape == (1, 2048) and logits.shape == (1, 1008)
    # He init keeps activations O(1) through the ~90 layers (PyTorch's default init would leave ~1e-12).
    assert 0.01 < float(pool.abs().mean()) < 100
