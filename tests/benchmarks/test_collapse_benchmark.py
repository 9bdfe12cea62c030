"""The collapse benchmark runs end to end (--tiny) and its tables summarise its own runs."""

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
    argv = ["--tiny", "--seeds", "2", "--data", "ring8", "--data", "points", "--data", "flat", "--workers", "2", "--json", str(out)]
    argv += ["--baseline", "ring8/GAN", "--baseline", "grid25/GAN"]  # the minimax one's 5 D steps: the full run has it
    with contextlib.redirect_stdout(stdout):
        assert collapse.main(argv) == 0
    return stdout.getvalue(), json.loads(out.read_text())


def test_every_default_configuration_ran_once_per_seed_with_nothing_but_its_data(tiny_run):
    _, result = tiny_run
    defaults = [r for r in result["runs"] if r["label"] == "defaults"]
    assert sorted((r["data"], r["seed"]) for r in defaults) == [
        ("flat", 0),
        ("flat", 1),
        ("points", 0),
        ("points", 1),
        ("ring8", 0),
        ("ring8", 1),
    ]
    for r in defaults:
        assert r["sets"] == [*collapse.TINY, "device=cpu"]  # no part count, no per-data-set setting (--device cpu by default)
        assert r["parts"] >= 1 and 0 <= r["modes_covered"] <= r["modes_total"] and r["cpu_s"] > 0


def test_summary_is_mean_and_standard_error_of_the_runs(tiny_run):
    _, result = tiny_run
    modes = [r["modes_covered"] for r in result["runs"] if r["label"] == "defaults" and r["data"] == "ring8"]
    mean, se = result["defaults"]["ring8"]["modes"]
    assert mean == pytest.approx(sum(modes) / 2)
    assert se == pytest.approx(abs(modes[0] - modes[1]) / 2)  # s.e. of two values: |a - b| / 2


def test_the_flat_rows_table_says_where_the_samples_outside_every_cluster_went(tiny_run):
    """Only data whose rows outside every cluster the diagnosis tests get a row (the flat file, not
    ring8 or the points file without flat rows), and its figures are the runs' own."""
    stdout, result = tiny_run
    assert list(result["outside"]) == ["flat"]
    runs = [r for r in result["runs"] if r["data"] == "flat" and r["label"] == "defaults"]
    mean, _ = result["outside"]["flat"]["outside_share"]
    assert mean == pytest.approx(100 * sum(r["outside"]["outside_share"] for r in runs) / 2)
    real, _ = result["outside"]["flat"]["outside_share_real"]
    assert 15 < real < 25  # 5,000 flat rows of 25,000, less the few inside the clusters' reach
    assert any(line.startswith("| flat | 2 | ") and " of " in line for line in stdout.splitlines())


def test_every_remedy_a_baseline_proposed_ran_on_its_seed(tiny_run):
    _, result = tiny_run
    baselines = [r for r in result["runs"] if r["label"] in collapse.BASELINES]
    assert sorted(r["label"] for r in baselines) == ["grid25/GAN", "ring8/GAN"]
    followers = [r for r in result["runs"] if r.get("baseline")]
    proposed = sorted((b["label"], b["seed"], m["name"]) for b in baselines for m in b["remedies"])
    assert sorted((r["baseline"], r["seed"], r["remedy"]) for r in followers) == proposed
    for r in followers:
        base = next(b for b in baselines if b["label"] == r["baseline"])
        remedy = next(m for m in base["remedies"] if m["name"] == r["remedy"])
        assert r["sets"] == [*base["sets"], *remedy["sets"]]


def test_tables_put_the_published_row_beside_ours(tiny_run):
    stdout, result = tiny_run
    gan_row = next(line for line in stdout.splitlines() if line.startswith("| ring8/GAN | baseline |"))
    assert "6.3+-0.5 / 98.2+-0.2 / 0.45+-0.09" in gan_row  # PacGAN Table 1, GAN on the ring
    ring = next(line for line in stdout.splitlines() if line.startswith("| ring8 | 2 |"))
    mean, se = result["defaults"]["ring8"]["modes"]
    assert f"| {mean:.1f}" + ("" if math.isnan(se) else f"+-{se:.1f}") in ring
    assert "| 8 / 97 / 0.03 |" in ring  # the target beside the measured row
    # Both tables name the clock their cost column was read from (CPU time with --device cpu).
    assert "| healthy | target | met | CPU s/run |" in stdout and "| more modes, high quality kept | CPU s/run |" in stdout


def test_a_run_with_no_high_quality_sample_is_summarised_not_fatal():
    """A collapsed baseline with no high-quality sample has no reverse KL (NaN in its row):
    statistics.stdev raised on it and the benchmark died after every run, tables and JSON lost
    (found by a review). Its summary is NaN, printed as such; KL to 4 places."""
    from gancore.report import mean_se

    mean, se = mean_se([0.5, float("nan")])
    assert math.isnan(mean) and math.isnan(se)
    # sample sd (ddof 1) sqrt(7/3) over sqrt(3)
    assert mean_se([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, 7**0.5 / 3), rel=1e-12)
    rows = [
        {
            "modes_covered": 0,
            "modes_total": 8,
            "high_quality_fraction": 0.0,
            "mode_kl": float("nan"),
            "parts": None,
            "verdict": "complete_collapse",
            "cpu_s": 1.0,
        },
        {
            "modes_covered": 8,
            "modes_total": 8,
            "high_quality_fraction": 0.99,
            "mode_kl": 0.0014,
            "parts": None,
            "verdict": "healthy",
            "cpu_s": 1.0,
        },
    ]
    assert collapse.cell(collapse.summarise(rows)) == "4.0+-4.0 / 49.5+-49.5 / nan"
    rows[0]["mode_kl"] = 0.0012
    assert collapse.cell(collapse.summarise(rows)).endswith(" / 0.0013+-0.0001")


def test_the_tilted_file_is_three_clusters_with_full_covariances(tmp_path):
    """The benchmark's second held-out file: two thin clusters at 45 degrees and a round one are
    3 modes to prepare (a diagonal mixture cut the thin ones into pieces)."""
    from gancore.data.points import prepare_points

    data = prepare_points(str(collapse.write_tilted(tmp_path / collapse.TILTED_FILE)), 0, None, None, 50)
    modes = data.meta["modes"]
    assert modes["count"] == 3 and modes["selection"]["covariance"] == "full"
    assert sorted(round(w, 1) for w in modes["weights"]) == [0.2, 0.4, 0.4]
