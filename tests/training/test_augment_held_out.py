"""ADA's p steered by held-out real examples (``augment.signal: held_out``): it rises only while D
memorises, holds D at the memorisation gap whatever the batch, sums each side once over the
ranks, consults one half of the test split (the diagnosis measures the other), and leaves no
trace in training while p stays 0."""

from __future__ import annotations

import pytest
import torch

from gancore import training, trainlog
from gancore.data.prepared import PreparedData
from gancore.training.augment import Augment
from helpers import image_meta, make_layout, make_params, ring_data


def test_held_out_signal_raises_p_only_while_d_memorises():
    """signal held_out: p rises while D calls a tenth more of the training examples real than of
    held-out ones, and falls otherwise, including for a D that is merely winning (sure of every
    real example, seen or not: r_t = 1, where ADA's rule would raise p)."""
    a = Augment(["jitter"], torch.device("cpu"), seed=0, adaptive=True, kimg=1.0, interval=4, signal="held_out")
    assert a.held_out
    seen, unseen = torch.full((50,), 3.0), torch.tensor([3.0, -3.0] * 25)  # all real against half: gap 0.5
    for step in range(1, 9):
        a.observe(seen, unseen)
        a.adjust(step, 50)
    assert float(a.p) == pytest.approx(0.4) and float(a.stats()["augment_gap"]) == pytest.approx(0.5)
    for step in range(9, 13):  # winning, not memorising: every real example called real
        a.observe(seen, seen)
        a.adjust(step, 50)
    assert float(a.p) == pytest.approx(0.2) and float(a.stats()["r_t"]) == 1.0
    # A slight gap (54 % of training examples called real against 50 % of held-out ones): under
    # the tolerance, p falls.
    slight = torch.tensor([1.0] * 27 + [-1.0] * 23)
    for step in range(13, 21):
        a.observe(slight, torch.tensor([1.0, -1.0] * 25))
        a.adjust(step, 50)
    assert float(a.p) == 0.0
    with pytest.raises(ValueError, match="unknown augmentation signal 'r_v'; allowed: r_t, held_out"):
        Augment(["jitter"], torch.device("cpu"), seed=0, signal="r_v")


def test_held_out_test_sums_each_side_once_over_the_ranks():
    """Under DDP the signs and counts are summed over the ranks by an in-place all-reduce; each
    side's count must enter the gap once. Two ranks seeing the same 128 + 128 signs are one rank
    seeing 256 + 256: 64.8 % of training examples called real against 53.1 % of held-out ones, a
    gap of 0.117 over the tolerance of 0.1, so p rises; with the training count summed twice the
    gap would read 0.043 and p would fall."""

    def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:  # two identical ranks, in place like NCCL/gloo
        return t.mul_(2).clone()

    train = torch.tensor([1.0] * 83 + [-1.0] * 45)  # sign mean 38 / 128
    held = torch.tensor([1.0] * 68 + [-1.0] * 60)  # sign mean 8 / 128
    kwargs = dict(adaptive=True, kimg=1.0, interval=1, signal="held_out")
    one = Augment(["jitter"], torch.device("cpu"), seed=0, **kwargs)
    one.observe(torch.cat([train, train]), torch.cat([held, held]))
    one.adjust(1, 50)
    two = Augment(["jitter"], torch.device("cpu"), seed=0, reduce=all_reduce_sum, **kwargs)
    two.observe(train, held)
    two.adjust(1, 50)
    assert float(one.last_gap) == pytest.approx(15 / 128) and float(two.last_gap) == pytest.approx(15 / 128)
    assert float(one.p) == pytest.approx(0.05) and float(two.p) == pytest.approx(0.05)


@pytest.mark.parametrize("batch", [16, 64, 512])
def test_held_out_steering_holds_d_at_the_memorisation_gap_whatever_the_batch(batch):
    """p follows D's gap against the tolerance the diagnosis uses (a tenth of the examples), not
    against its statistical significance, which a larger batch reaches at a smaller gap: D calls
    80 % of its training examples real and 55 % of unseen ones (gap 0.25: p climbs at full
    speed), or 75 % (gap 0.05: D generalises about as well as it needs to, p stays near 0 at
    every batch; at batch 512 a significance test called that gap memorising, z 3.8 an
    interval), or 80 % (no gap at r_t 0.6, where ADA's rule holds p wherever it is)."""
    generator = torch.Generator().manual_seed(batch)

    def signs(share_real: float) -> torch.Tensor:
        return torch.where(torch.rand(batch, generator=generator) < share_real, 1.0, -1.0)

    runs = {}
    for held_real in (0.55, 0.75, 0.8):
        a = Augment(["jitter"], torch.device("cpu"), seed=0, adaptive=True, signal="held_out", kimg=100.0)
        ps = []
        for step in range(1, 4001):
            a.observe(signs(0.8), signs(held_real))
            a.adjust(step, batch)
            ps += [float(a.p)] if step % 4 == 0 else []
        runs[held_real] = (round(ps[-1], 3), round(sum(ps) / len(ps), 4))
    travel = 4000 * batch / 100_000  # p's largest possible rise over these steps at kimg 100
    assert runs[0.55][0] > 0.9 * min(travel, 1.0), runs
    # Below the tolerance an interval's gap exceeds it by chance (at batch 16, 64 signs a side, in
    # 9 % of intervals for a gap of 0.05); p then falls back at once: its mean stays under 0.01.
    assert runs[0.75][1] < 0.01 and runs[0.8][1] < 0.01, runs


def test_held_out_steering_consults_one_half_of_the_test_split_and_the_diagnosis_measures_the_other(tmp_path):
    """Training shows D every other test example (augment.signal=held_out); the diagnosis of such
    a run measures D on the rest, which training never consulted."""
    from gancore.diagnostics.memorisation import counts
    from gancore.heldout import measured_half, steering_half
    from gancore.modelio import load_discriminator

    data = ring_data()  # 128 test points
    aug = {"policy": "jitter", "adaptive": True, "kimg": 0.5, "interval": 2, "target": 0.01, "signal": "held_out"}
    params = make_params(steps=8, checkpoint_every=8, log_every=2, monitor_every=None)
    params = params.model_copy(update={"augment": params.augment.model_copy(update=aug)})
    layout = make_layout(tmp_path, data)
    training.train(params, layout)
    assert len(torch.load(layout.checkpoint, weights_only=False)["trainer"]["held_out_batches"]["perm"]) == 64
    index = torch.arange(128)
    assert set(steering_half(index).tolist()).isdisjoint(measured_half(index).tolist())
    assert sorted(steering_half(index).tolist() + measured_half(index).tolist()) == index.tolist()

    # NaN points get sign 0 from D: called neither real nor fake. Poison the half the diagnosis
    # must not read; a steered run's counts stay whole, an unsteered run's (whole split) do not.
    D = load_discriminator(layout.discriminator, "cpu")
    data.test[0::2] = float("nan")

    def signed(c):  # examples D called real or fake
        return 2 * c["real_test"] - c["sign_test"]

    steered, unsteered = counts(D, data, 1, 0, steered=True), counts(D, data, 1, 0, steered=False)
    assert steered["n_test"] == 64 and signed(steered) == 64
    assert unsteered["n_test"] == 128 and signed(unsteered) == 64


def test_a_part_without_test_examples_of_its_own_cannot_be_steered_by_held_out_ones(tmp_path):
    """A mixture part no test point falls in is scored on the whole test split, other parts' data:
    its D would call those examples fake and the signal would read it as memorisation."""
    from gancore.errors import ParamsError

    data = ring_data()
    data.meta.update(own_test=False, part={"index": 3, "of": 8, "description": "cluster 3"})
    params = make_params(steps=2)
    params = params.model_copy(
        update={"augment": params.augment.model_copy(update={"policy": "jitter", "adaptive": True, "signal": "held_out"})}
    )
    with pytest.raises(
        ParamsError, match=r"augment.signal: held_out needs held-out examples of this part \(cluster 3\).*use augment.signal=r_t"
    ):
        training.train(params, make_layout(tmp_path, data))
    assert not make_layout(tmp_path, data).checkpoint.exists()


@pytest.mark.parametrize("options", [{"d_batch_norm": True}, {"spectral_norm": True}])
def test_held_out_examples_leave_no_trace_while_p_stays_zero(tmp_path, options):
    """With signal held_out and p held at 0 (a speed too slow to move it), training is bit for bit
    the unaugmented run: the held-out pass changes no stream, no weight and no buffer of D (batch
    statistics, spectral norm's vectors; the diagnosis's eval-mode D reads them)."""
    from gancore.config import validate

    images = torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    meta = image_meta("mnist", [1, 28, 28], 32, 16, {"count": None})
    tree = {
        "device": "cpu",
        "data": {"name": "mnist"},
        "model": {"arch": "dcgan", "latent_dim": 8, "options": {"width": 4, **options}},
        "train": {"steps": 6, "batch_size": 8, "log_every": 1, "checkpoint_every": 6, "monitor_every": None},
        "mixture": {"enabled": False},
        "tracking": {"enabled": False},
    }
    held = {"policy": "translation,cutout,color", "adaptive": True, "signal": "held_out", "kimg": 1e12}
    layouts = []
    for name, augment in (("plain", {}), ("steered", held)):
        layout = make_layout(tmp_path / name, PreparedData(meta, images[:32], images[32:]))
        training.train(validate({**tree, "augment": augment}), layout)
        layouts.append(layout)
    plain, steered = layouts
    assert [r["loss_d"] for r in trainlog.read(plain.train_log)] == [r["loss_d"] for r in trainlog.read(steered.train_log)]
    a, b = (torch.load(layout.checkpoint, weights_only=False)["trainer"] for layout in (plain, steered))
    for net in ("generator", "discriminator"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
