"""The dynamics checks beside the logs they were written for: rows logged at uneven intervals (a
resume with another train.log_every) and losses whose D is no sigmoid classifier."""

from __future__ import annotations

import numpy as np
import pytest

from constructed_inputs import make_log
from gancore.diagnostics.dynamics import analyse_dynamics, on_step_grid
from gancore.names import LOSSES


def _resumed_sparser(collapse_from: int) -> dict[str, np.ndarray]:
    """Logged every 10 steps to 5,000, then (resumed with log_every 1000) every 1,000 to 10,000; a
    minimax run whose D rejects the samples and whose G gradient collapses from ``collapse_from``."""
    steps = np.concatenate([np.arange(10, 5001, 10), np.arange(6000, 10001, 1000)]).astype(np.float64)
    late = steps >= collapse_from
    log = make_log(np.where(late, 0.98, 0.6), np.where(late, 0.02, 0.4), np.where(late, 0.01, 1.0))
    return {**log, "step": steps}


def test_windows_are_fractions_of_the_steps_not_of_the_rows():
    """505 rows, 500 of them before step 5,000: the last fifth of the rows (steps 4,030-10,000) is
    mostly healthy rows, so the collapse from step 8,000 read as no collapse (ratio 1). On the grid
    of steps the late window is steps 8,000-10,000."""
    log = _resumed_sparser(8000)
    d = analyse_dynamics(log, "minimax")
    assert d["rows"] == 505 and d["grid_points"] == 1000
    assert d["vanishing_gradients"]["flag"] is True and d["vanishing_gradients"]["grad_ratio"] == pytest.approx(0.01)
    assert d["dominance"]["flag"] is True
    # Evenly logged, the grid is the log itself.
    even = make_log(np.full(50, 0.6), np.full(50, 0.4), np.ones(50))
    grid = on_step_grid(even)
    assert all(np.array_equal(grid[k], even[k], equal_nan=True) for k in even)


def test_the_grid_takes_the_last_row_at_or_before_each_step_and_ends_on_the_last():
    log = {"step": np.array([1.0, 2.0, 3.0, 4.0, 10.0, 11.5]), "x": np.arange(6.0)}  # typical gap: 1
    grid = on_step_grid(log)
    assert grid["step"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 11.5]
    assert grid["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 4.0, 4.0, 5.0]
    # A log dense for a few steps and sparse after: the grid is at most 4 points a row.
    dense_then_sparse = {"step": np.array([1.0, 2.0, 3.0, 1000.0, 2000.0]), "x": np.arange(5.0)}
    assert len(on_step_grid(dense_then_sparse)["step"]) <= 4 * 5 + 1


@pytest.mark.parametrize("loss", LOSSES)
def test_probability_checks_judge_sigmoid_discriminators_only(loss):
    """A falling G gradient is the saturating loss's failure only beside a D that rejects the
    samples, which only a sigmoid D's output says; a least-squares G's gradient vanishes when G
    wins, and a score's swing has no scale the 0.1 of a probability fits. Other losses get the
    numbers and no flag."""
    n = 300
    t = np.arange(n)
    winning_g = make_log(np.full(n, 0.6), np.full(n, 0.45), np.where(t < 60, 2.0, 0.1))
    swinging = make_log(0.5 + 0.3 * np.sin(t / 3), 0.5 - 0.3 * np.sin(t / 3), np.ones(n))
    sigmoid = loss in ("minimax", "non_saturating")
    vanishing = analyse_dynamics(winning_g, loss)["vanishing_gradients"]
    assert vanishing["grad_collapsed"] is True and vanishing["flag"] is (False if sigmoid else None)
    assert analyse_dynamics(swinging, loss)["oscillation"]["flag"] is (True if sigmoid else None)


def test_the_report_shows_the_equilibrium_only_where_it_holds():
    """D(x) = D(G(z)) = 1/2 and V = -log 4 are a sigmoid D's equilibrium: a hinge run's report
    does not print them beside a -log 4 it was never meant to reach."""
    from collections import defaultdict

    from gancore.diagnostics import _markdown

    n = 100
    log = make_log(np.full(n, 0.6), np.full(n, 0.4), np.ones(n))
    for loss, shown in (("minimax", True), ("hinge", False)):
        figures = defaultdict(lambda: None, verdict="healthy", explanation="", remedies=[], dynamics=analyse_dynamics(log, loss))
        text = _markdown(figures)
        assert ("late V(D,G) (equilibrium -log 4 = -1.386)" in text) is shown and ("late D(x) / D(G(z))" in text) is shown


def test_a_mixture_has_the_problem_any_of_its_parts_has():
    """Two parts oscillating out of phase average to a flat D(G(z)); each part alone oscillates.
    The mixture's dynamics take the part's check, named, and the verdict says where."""
    from gancore.diagnostics.dynamics import with_parts
    from gancore.diagnostics.verdict import decide

    n = 300
    t = np.arange(n)
    parts = [make_log(0.5 + s * 0.3 * np.sin(t / 3), 0.5 - s * 0.3 * np.sin(t / 3), np.ones(n)) for s in (1, -1)]
    average = {k: (parts[0][k] + parts[1][k]) / 2 for k in parts[0]}
    alone = analyse_dynamics(average, "non_saturating")
    assert alone["oscillation"]["flag"] is False
    found = with_parts(alone, [(i, analyse_dynamics(p, "non_saturating")) for i, p in enumerate(parts)])
    assert found["oscillation"]["flag"] is True and found["oscillation"]["part"] == 0 and found["oscillation"]["parts_flagged"] == [0, 1]
    assert found["dominance"] == alone["dominance"]  # what no part flags stays the average's
    figures = {"modes_total": 8, "modes_covered": 8, "modes_expected": 8.0, "modes_expected_sd": 0.0, "high_quality_fraction": 0.99}
    out = decide(figures, found, "non_saturating", {})
    assert out["verdict"] == "not_converged" and "oscillates late in training" in out["explanation"]
    assert "in part 0 (and part 1)" in out["explanation"]


def test_known_equal_weight_modes_are_compared_with_uniform_as_pacgan_does():
    """ring8 and grid25 are mixtures of equal weights: the reverse KL's reference is uniform, not
    the histogram of the drawn test labels (whose own noise raised a faithful grid25 generator's KL
    from 0.0048 to 0.0060 on average). A fitted mixture (a points file) keeps its test labels."""
    from gancore.diagnostics.modes import mode_kl, vector_modes

    rng = np.random.default_rng(0)
    grid = np.linspace(-4, 4, 5)
    centers = np.array([[a, b] for a in grid for b in grid])
    points = centers[rng.integers(0, 25, 2500)] + 0.05 * rng.standard_normal((2500, 2))
    test_labels = rng.integers(0, 25, 10_000)
    report = vector_modes(points, {"centers": centers.tolist(), "sigma": 0.05}, real_labels=test_labels, real_points=points)
    assert report["real_histogram_source"] == "uniform" and report["real_histogram"] == [1 / 25] * 25
    counts = np.asarray(report["generated_counts"])
    assert report["mode_kl"] == pytest.approx(mode_kl(counts, np.full(25, 1 / 25)), abs=1e-15)
