"""FID's sample-size bias, and FID-infinity (Chong and Forsyth 2020) removing it; the provenance
card that keeps numbers measured differently apart."""

from __future__ import annotations

import torch

from gancore.metrics import fid
from gancore.metrics.fid_infinity import fid_infinity
from gancore.provenance import COMPARABLE, differences


def test_fid_infinity_removes_the_bias_of_a_finite_sample():
    """Two Gaussians in 32-D whose means differ by a unit vector: the true FID is exactly 1. The
    real statistics come from 50,000 points; FID from 1,000 generated ones is biased upwards (by
    ~0.25 here: the covariance term's bias dominates tr(Sigma)/N = 0.03). Over 8 draws, FID-infinity
    (fitted over N = 200..1000) averages within 0.08 of the truth (its spread is ~0.1 a draw, so
    ~0.035 for the mean of 8: more than 2 s.e. of room)."""
    d = 32
    shift = torch.zeros(d, dtype=torch.float64)
    shift[0] = 1.0
    biased, unbiased = [], []
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        real = torch.randn(50_000, d, generator=g, dtype=torch.float64)
        fake = torch.randn(1000, d, generator=g, dtype=torch.float64) + shift
        biased.append(fid(real, fake))
        out = fid_infinity(real, fake, seed=seed)
        unbiased.append(out["fid_infinity"])
        assert out["fid_slope"] > 0 and [n for n, _ in out["fid_curve"]][-1] == 1000 and len(out["fid_curve"]) == 7
    assert sum(biased) / 8 - 1.0 > 0.15  # the bias FID-infinity is for
    assert abs(sum(unbiased) / 8 - 1.0) < 0.08


def test_cards_differ_in_the_fields_that_make_numbers_incomparable():
    a = {
        "feature_network": "x",
        "weights": "w1",
        "resize": "r",
        "input_range": "i",
        "n_real": 10,
        "n_generated": 10,
        "reference_split": "test",
        "seed": 0,
        "protocol": "p",
        "software": "torch 2.14.1, numpy 2.4.6, Python 3.11.7, CPU kernels AVX512",
    }
    assert differences(a, {**a, "seed": 3}) == []  # another seed: the comparison a sweep makes
    # Another install rounds within the seeds' spread: named on the card, not a reason to refuse.
    assert differences(a, {**a, "software": "torch 2.11.0, numpy 2.3.0, Python 3.12.1, CPU kernels AVX2"}) == []
    assert differences(a, {**a, "weights": "w2", "n_generated": 50}) == ["weights: 'w1' vs 'w2'", "n_generated: 10 vs 50"]
    assert differences(a, None) == ["provenance (a run without a card)"]
    assert "seed" not in COMPARABLE and "software" not in COMPARABLE


def test_the_software_card_names_what_else_decides_a_run_s_bits():
    import platform

    import numpy
    import torch

    from gancore.device import software

    threads = torch.get_num_threads()
    try:
        for n, said in ((1, "1 thread"), (2, "2 threads")):  # another thread count rounds otherwise too
            torch.set_num_threads(n)
            assert software("cpu") == (
                f"torch {torch.__version__}, numpy {numpy.__version__}, Python {platform.python_version()}, "
                f"CPU kernels {torch.backends.cpu.get_cpu_capability()}, {said}"
            )
            assert software(torch.device("cpu")) == software("cpu")
    finally:
        torch.set_num_threads(threads)
    if not torch.cuda.is_available():
        from gancore.device import resolve_device

        assert software("auto") == software(resolve_device("auto"))  # where training would run (MPS too)


def test_remedy_ranking_refuses_runs_measured_otherwise():
    from gancore_flows.remedy import rank, table

    card = {
        "feature_network": "domain",
        "weights": "w",
        "resize": "none",
        "input_range": "i",
        "n_real": 100,
        "n_generated": 100,
        "reference_split": "t",
        "seed": 0,
        "protocol": "p",
    }

    def row(label, n, hq):
        figures = {"diagnose": {"verdict": "healthy", "modes_covered": 8, "modes_total": 8, "high_quality_fraction": hq}}
        return {"label": label, "extra": [], "result": {**figures, "evaluate": {"provenance": {**card, "n_generated": n}}}}

    ranked = rank([row("baseline", 100, 0.90), row("better", 100, 0.95), row("other n", 500, 0.99)])
    assert [r["label"] for r in ranked] == ["better", "baseline", "other n"]
    assert ranked[-1]["not_comparable"] == ["n_generated: 100 vs 500"]
    headers, cells = table(ranked)
    assert cells[-1][3] == "not ranked, measured otherwise than the baseline: n_generated: 100 vs 500"
    # The columns are the figure registry's labels; counts say what they count of.
    assert headers[3:6] == ["verdict", "modes covered", "high-quality fraction"] and cells[0][3:6] == ["healthy", "8 / 8", "0.95"]
