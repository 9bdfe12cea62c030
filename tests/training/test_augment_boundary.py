"""ADA's r_t reads D at its decision boundary under the loss (gancore.losses.boundary): 0 for a
logistic or hinge D, 0.5 for least squares; a Wasserstein critic has none and takes the policy on
every sample only."""

from __future__ import annotations

import pytest
import torch

from gancore.cli import main
from gancore.training.augment import Augment
from helpers import PARAMS


def _steer(boundary: float, logits: torch.Tensor, adjustments: int = 4) -> Augment:
    a = Augment(["jitter"], torch.device("cpu"), seed=0, adaptive=True, target=0.6, kimg=1.0, interval=1, boundary=boundary)
    for step in range(1, adjustments + 1):
        a.observe(logits)
        a.adjust(step, 50)
    return a


def test_r_t_reads_a_least_squares_d_at_its_boundary():
    """A least-squares D that cannot tell real from fake settles at 0.5 (halfway between its
    targets 0 and 1). Read at 0.5, such a D gives r_t about 0 and p stays at 0; read at a logistic
    D's 0, as before, every output is "real", r_t is 1 and p rose at full speed however little D knew."""
    unsure = 0.5 + 0.2 * torch.tensor([1.0, -1.0] * 25)  # half above the boundary, half below
    at_half = _steer(0.5, unsure)
    assert float(at_half.stats()["r_t"]) == 0.0 and float(at_half.p) == 0.0
    at_zero = _steer(0.0, unsure)
    assert float(at_zero.stats()["r_t"]) == 1.0 and float(at_zero.p) == pytest.approx(4 * 50 / 1000)
    # A D sure of real data at its own scale (its target 1) is sure at the boundary too: r_t 1.
    assert float(_steer(0.5, torch.full((50,), 0.95)).stats()["r_t"]) == 1.0


def test_a_critic_without_a_boundary_has_no_r_t_and_no_adaptive_p(capsys, tmp_path):
    with pytest.raises(ValueError, match="reads D's decision boundary, and this loss has none; use a fixed policy"):
        Augment(["jitter"], torch.device("cpu"), seed=0, adaptive=True, boundary=None)
    fixed = Augment(["jitter"], torch.device("cpu"), seed=0, boundary=None)
    fixed.observe(torch.full((8,), 3.0))
    fixed.adjust(4, 8)
    assert set(fixed.stats()) == {"augment_p"} and float(fixed.p) == 1.0
    args = ["train", "--params", str(PARAMS), "--out", str(tmp_path)]
    sets = ["loss.name=wasserstein_gp", "augment.policy=jitter", "augment.adaptive=true"]
    assert main(args + [a for s in sets for a in ("-S", s)]) == 2
    err = capsys.readouterr().err
    assert "augment.adaptive: steers p by D's calls of real and fake" in err
    assert "loss.name=wasserstein_gp has no decision boundary" in err
    assert "set augment.adaptive=false" in err and "minimax, non_saturating, hinge, least_squares" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("loss", ["wasserstein_gp", "least_squares"])
def test_the_diagnosis_and_the_monitor_read_a_trained_d_at_its_loss_s_boundary(tmp_path, loss):
    """Through training, the monitor and the diagnosis's measurement: a Wasserstein critic gets
    its AUC and no share or r_t; a least-squares D its shares, read at 0.5 (r_t then equals the
    training shares' 2 p - 1 exactly, as at any boundary no logit sits on)."""
    from gancore import training, trainlog
    from gancore.diagnostics import memorisation
    from helpers import make_layout, make_params

    params = make_params(loss=loss, steps=4, log_every=2, monitor_every=2)
    layout = make_layout(tmp_path)
    training.train(params, layout)
    rows = [r for r in trainlog.read(layout.train_log) if r["step"] % 2 == 0]
    assert all(r.get("monitor/d_auc") is not None for r in rows)
    assert all((r.get("monitor/d_gap") is None) == (loss == "wasserstein_gp") for r in rows)
    found = memorisation.measure(params, layout, torch.device("cpu"))
    assert found is not None and 0.0 <= found["auc"] <= 1.0
    if loss == "wasserstein_gp":
        assert found["gap"] is found["r_t_train"] is found["called_real_train"] is None
    else:
        from gancore.data.prepared import load_prepared
        from gancore.modelio import load_discriminator

        D, data = load_discriminator(layout.discriminator, "cpu"), load_prepared(layout.prepared)
        at = {b: memorisation.summarise([memorisation.counts(D, data, 1, params.seed, boundary=b)]) for b in (0.5, 0.0)}
        assert found == at[0.5] and found["called_real_train"] != at[0.0]["called_real_train"]
        assert found["r_t_train"] == pytest.approx(2 * found["called_real_train"] - 1, abs=1e-12)


def test_memorisation_leaves_out_parts_whose_test_split_is_other_parts_data(tmp_path):
    """A mixture part no test point falls in is scored on the whole test split, other parts'
    data: its D tells those apart from its own examples whether it memorises or not (found by a
    review: 24 of 36 "held-out" points of a ring8 run sat 140 part units away). The diagnosis
    pools only parts with held-out data of their own and counts the others; the monitor logs no
    D figures for such a part."""
    from gancore import training, trainlog
    from gancore.data.prepared import save_prepared
    from gancore.diagnostics import memorisation
    from gancore.io import write_json
    from gancore.layout import Layout
    from helpers import make_params, ring_data

    params = make_params(steps=4, log_every=2, monitor_every=2)
    layout = Layout(tmp_path)
    for index, own in enumerate((True, False)):
        data = ring_data(seed=index)
        data.meta.update(own_test=own, part={"index": index, "of": 2, "description": f"cluster {index}"})
        part = layout.part(index)
        save_prepared(part.prepared, data)
        training.train(params, part)
        rows = [r for r in trainlog.read(part.train_log) if r["step"] % 2 == 0]
        assert all((r.get("monitor/d_auc") is not None) == own for r in rows)
    write_json(layout.mixture, {"parts": [{"index": 0}, {"index": 1}]})
    found = memorisation.measure(params, layout, torch.device("cpu"))
    alone = memorisation.measure(params, layout.part(0), torch.device("cpu"))
    assert found["parts_without_held_out"] == 1 and found["n"] == alone["n"] and found["auc"] == alone["auc"]


def test_one_part_of_the_whole_data_set_has_the_whole_test_split_as_its_own(tmp_path):
    """Images under the default mixture are one part (partition auto): its held-out data are the
    whole test split, so held-out steering applies. It was refused with "none of the test split
    falls in it" beside count_test 1000 (found by a review)."""
    from gancore.config import validate
    from gancore.data.prepared import PreparedData, load_prepared
    from gancore.heldout import steering_problem
    from gancore.layout import Layout
    from gancore.partition import prepare_parts

    gen = torch.Generator().manual_seed(0)
    meta = {"name": "folder", "kind": "image", "shape": [1, 8, 8], "value_range": [0, 255], "storage": "uint8", "modes": {}}
    images = PreparedData(meta, *(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=gen) for n in (200, 100)))
    params = validate({"device": "cpu", "data": {"name": "mnist"}, "tracking": {"enabled": False}})
    layout = Layout(tmp_path)
    info = prepare_parts(params, layout, images)
    assert info["method"] == "none" and len(info["parts"]) == 1
    part = load_prepared(layout.part(0).prepared)
    assert part.meta["own_test"] is True and len(part.test) == 100
    assert steering_problem(part.meta, part.meta["count_test"], 32) is None
