"""The data-limited benchmark runs end to end (--tiny): every augmentation on the same subset,
scored with the full data's classifier, its table beside the published anchors."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from helpers import import_benchmark


def test_tiny_run_trains_every_policy_on_one_yardstick(tmp_path):
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    data_limited = import_benchmark("data_limited")
    stdout = io.StringIO()
    out = tmp_path / "runs"
    with contextlib.redirect_stdout(stdout):
        assert (
            data_limited.main(["--tiny", "--data", "mnist", "--workers", "2", "--json", str(tmp_path / "r.json"), "--out", str(out)]) == 0
        )
    result = json.loads((tmp_path / "r.json").read_text())
    assert sorted(r["policy"] for r in result["runs"]) == ["adaptive", "fixed", "held_out", "none"]
    p_final = {r["policy"]: r["p_final"] for r in result["runs"]}
    assert p_final["none"] is None and p_final["fixed"] == 1.0 and all(0 <= p_final[k] <= 1 for k in ("adaptive", "held_out"))
    assert all(r["n_train"] == 64 and r["d_gap"] is not None for r in result["runs"])  # 1 % of the tiny 2,000, at least 64
    # One yardstick: every run's domain classifier is the reference's (trained on the whole set).
    reference = (out / "mnist" / "reference" / "data" / "prepared" / "classifier.pt").read_bytes()
    for run in (out / "mnist").glob("0.01-*"):
        assert (run / "data" / "prepared" / "classifier.pt").read_bytes() == reference
    text = stdout.getvalue()
    assert "| mnist | 1% | adaptive | 1 |" in text and "| DiffAugment, BigGAN, CIFAR-10 10 % | 39.78 | 22.4 (-44 %) |" in text


@pytest.mark.parametrize("benchmark", ["data_limited", "collapse"])
def test_cuda_without_a_cuda_device_is_a_usage_error_before_any_run(benchmark, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    with pytest.raises(SystemExit) as exit_info:
        import_benchmark(benchmark).main(["--tiny", "--device", "cuda", "--out", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before anything was written
