"""The collapse benchmark runs end to end (--tiny) and its table summarises its own runs."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest

from helpers import import_benchmark

collapse = import_benchmark("collapse")

# One tiny_run (a session fixture) serves the module: keep its tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("collapse-benchmark")


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("collapse") / "collapse.json"
    stdout = io.StringIO()
    argv = ["--tiny", "--seeds", "2", "--data", "ring8", "--method", "GAN", "--method", "mixture", "--workers", "2", "--json", str(out)]
    with contextlib.redirect_stdout(stdout):
        assert collapse.main(argv) == 0
    return stdout.getvalue(), json.loads(out.read_text())


def test_every_configuration_ran_once_per_seed(tiny_run):
    _, result = tiny_run
    assert sorted((r["method"], r["seed"]) for r in result["runs"]) == [("GAN", 0), ("GAN", 1), ("mixture", 0), ("mixture", 1)]
    for r in result["runs"]:
        assert 0 <= r["modes_covered"] <= 8 and 0 <= r["high_quality_fraction"] <= 1 and r["cpu_s"] > 0


def test_summary_is_mean_and_standard_error_of_the_runs(tiny_run):
    _, result = tiny_run
    for method in ("GAN", "mixture"):
        modes = [r["modes_covered"] for r in result["runs"] if r["method"] == method]
        mean, se = result["summary"][f"ring8/{method}"]["modes"]
        assert mean == pytest.approx(sum(modes) / 2)
        # s.e. of two values: |a - b| / 2.
        assert se == pytest.approx(abs(modes[0] - modes[1]) / 2)


def test_table_puts_the_published_row_beside_ours(tiny_run):
    stdout, result = tiny_run
    gan_row = next(line for line in stdout.splitlines() if line.startswith("| ring8 | GAN |"))
    assert "6.3+-0.5 / 98.2+-0.2 / 0.45+-0.09" in gan_row  # PacGAN Table 1, GAN on the ring
    mixture_row = next(line for line in stdout.splitlines() if line.startswith("| ring8 | mixture |"))
    mean, se = result["summary"]["ring8/mixture"]["modes"]
    assert f"| {mean:.1f}" + ("" if math.isnan(se) else f"+-{se:.1f}") in mixture_row
