"""Augmentation D sees on real and generated samples (DiffAugment) and its adaptive probability
(ADA): the transforms, p's speed, exact resume, every loss and packing, and bad policies."""

from __future__ import annotations

import math

import pytest
import torch

from gancore import training, trainlog
from gancore.cli import main
from gancore.data.prepared import PreparedData
from gancore.losses import boundary
from gancore.names import IMAGE_AUGMENTATIONS, LOSSES
from gancore.training.augment import Augment, Draws, _cutout, _translation
from helpers import PARAMS, image_meta, make_layout, make_params, ring_data

# The transforms run where training runs: every transform test on the CPU and, where there is one,
# on a CUDA device (generators, indexing and masks are per-device code paths in torch).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
def test_translation_shifts_whole_pixels_with_zero_fill(device):
    g = torch.Generator(device).manual_seed(0)
    x = torch.arange(1, 65, dtype=torch.float32, device=device).reshape(1, 1, 8, 8).repeat(16, 3, 1, 1)
    y = _translation(x, Draws(g, torch.device(device)))
    assert y.shape == x.shape
    for i in range(16):  # each sample: the same image moved by at most 1 pixel (1/8 of 8), zeros in
        matches = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(y[i, 0], torch.nn.functional.pad(x[i, 0], [1, 1, 1, 1])[1 + dy : 9 + dy, 1 + dx : 9 + dx])
        ]
        assert len(matches) == 1


@pytest.mark.parametrize("device", DEVICES)
def test_cutout_zeroes_a_square_of_half_the_side(device):
    g = torch.Generator(device).manual_seed(1)
    x = torch.ones(32, 3, 8, 8, device=device)
    y = _cutout(x, Draws(g, torch.device(device)))
    zeros = (y[:, 0] == 0).sum(dim=(1, 2))
    # A 4 x 4 square, clipped at the border: 4 to 16 pixels; the same in every channel.
    assert zeros.min() >= 4 and zeros.max() == 16
    assert torch.equal(y[:, 0] == 0, y[:, 2] == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_two_ranks_augment_their_halves_of_a_batch_as_one_process_augments_it(device):
    """Distributed training: each rank draws the whole batch's transforms and keeps its rows, so
    the ranks' halves put together are the single process's batch, and their streams stay equal."""
    x = torch.randn(8, 3, 8, 8, device=device)
    policy = ["color", "translation", "cutout", "geometric", "blit", "ada_color"]
    one = Augment(policy, torch.device(device), seed=3, adaptive=True)
    one.p = torch.full((), 0.5, device=device)
    ranks = [Augment(policy, torch.device(device), seed=3, adaptive=True, share=(r, 2)) for r in (0, 1)]
    for a in ranks:
        a.p = torch.full((), 0.5, device=device)
    for _ in range(2):  # twice: the streams are still in step after a batch
        whole = one(x)
        assert torch.equal(torch.cat([ranks[0](x[:4]), ranks[1](x[4:])]), whole)
        assert not torch.equal(whole, x)
    assert torch.equal(ranks[0].generator.get_state(), ranks[1].generator.get_state())
    assert torch.equal(ranks[0].generator.get_state(), one.generator.get_state())


@pytest.mark.parametrize("device", DEVICES)
def test_the_transforms_are_differentiable(device):
    x = torch.randn(4, 3, 8, 8, device=device, requires_grad=True)
    a = Augment(["color", "translation", "cutout", "geometric", "blit", "ada_color"], torch.device(device), seed=0)
    a(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmenting_a_batch_never_makes_the_host_wait_for_the_gpu():
    """The module's promise, no host synchronisation per step: a blocking host-to-device copy (a
    fresh ``torch.tensor(..., device="cuda")``) or a read-back would stall the loop every batch.
    The first batch may copy constants to the device once."""
    x = torch.randn(16, 3, 16, 16, device="cuda")
    for adaptive in (False, True):
        a = Augment(list(IMAGE_AUGMENTATIONS), torch.device("cuda"), seed=0, adaptive=adaptive)
        a.p = torch.full((), 0.5, device="cuda")
        a(x)
        torch.cuda.set_sync_debug_mode("error")
        try:
            a(x)
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_adaptive_p_moves_at_the_documented_speed():
    """p moves by (samples per step x interval) / (kimg x 1000) per adjustment, up while r_t is
    above the target: from 0 to 1 in kimg thousand samples."""
    a = Augment(["jitter"], torch.device("cpu"), seed=0, adaptive=True, target=0.6, kimg=1.0, interval=4)
    confident = torch.full((50,), 3.0)  # D calls every real sample real: r_t = 1
    for step in range(1, 9):
        a.observe(confident)
        a.adjust(step, 50)
    assert float(a.p) == pytest.approx(2 * 50 * 4 / 1000)  # two adjustments, 0.2 each
    assert float(a.stats()["r_t"]) == 1.0
    unsure = torch.tensor([1.0, -1.0] * 25)  # r_t = 0: below the target, p comes down
    for step in range(9, 13):
        a.observe(unsure)
        a.adjust(step, 50)
    assert float(a.p) == pytest.approx(0.2)
    with pytest.raises(
        ValueError, match="unknown augmentation blur; allowed: color, translation, cutout, geometric, blit, ada_color, jitter"
    ):
        Augment(["blur"], torch.device("cpu"), seed=0)


def test_p_moves_by_the_real_samples_d_saw_including_every_critic_step(tmp_path):
    """With n_critic = 2, D sees 2 x 32 real samples per generator step: p moves in steps of
    2 x 32 x interval / (kimg x 1000) = 0.0128, not the 0.0064 that one critic batch would give."""
    aug = {"policy": "jitter", "adaptive": True, "kimg": 10.0, "interval": 2, "target": 0.01}
    params = make_params(steps=12, checkpoint_every=12, log_every=2, n_critic=2)
    params = params.model_copy(update={"augment": params.augment.model_copy(update=aug)})
    layout = make_layout(tmp_path)
    training.train(params, layout)
    ps = [r["augment_p"] for r in trainlog.read(layout.train_log)]
    delta = 2 * 32 * 2 / 10_000
    assert max(ps) > 0 and all(abs(p / delta - round(p / delta)) < 1e-3 for p in ps), ps


def test_augmented_checkpoints_name_what_differs_and_r_t_ones_from_before_the_signal_resume():
    from gancore.checkpoint import describe_mismatch, run_identity

    params = make_params()
    steered = params.model_copy(update={"augment": params.augment.model_copy(update={"policy": "jitter", "adaptive": True})})
    r_t = run_identity(steered, "hash")
    assert "signal" not in r_t["augment"]  # an identity written before augment.signal existed: still the same run
    held = steered.model_copy(update={"augment": steered.augment.model_copy(update={"signal": "held_out"})})
    message = describe_mismatch(r_t, run_identity(held, "hash"))
    assert message == "augment (augment.signal: '(absent)' in the checkpoint, 'held_out' now)"


def test_settings_that_cannot_change_the_weights_do_not_refuse_a_resume():
    """A fixed policy (p = 1) is not steered, and a policy without jitter adds no noise: their
    target, kimg and jitter were part of the run's identity, so changing them refused the resume
    (found by a review). Under the adaptive p the target still counts."""
    from gancore.checkpoint import identity_digest, run_identity

    params = make_params()

    def identity(**augment):
        return identity_digest(run_identity(params.model_copy(update={"augment": params.augment.model_copy(update=augment)}), "hash"))

    fixed = identity(policy="jitter")
    assert identity(policy="jitter", target=0.7, kimg=100.0, interval=8) == fixed
    assert identity(policy="jitter", jitter=0.1) != fixed
    assert identity(policy="translation,cutout", jitter=0.1) == identity(policy="translation,cutout")
    assert identity(policy="jitter", adaptive=True, target=0.7) != identity(policy="jitter", adaptive=True)


@pytest.mark.parametrize("signal", ["r_t", "held_out"])
def test_resumed_run_has_the_same_p_curve_and_generator(tmp_path, signal):
    """Killed at a checkpoint and resumed: the same p curve, the same generator, bit for bit."""
    aug = {"policy": "jitter", "adaptive": True, "kimg": 0.5, "interval": 2, "target": 0.01, "signal": signal}
    # PyTorch's initialisation: from He's (the mlp default) r_t stayed below the target and p at 0
    options = {"hidden": 16, "depth": 2, "batch_norm": True, "init": "torch"}
    params = make_params(steps=12, checkpoint_every=6, log_every=2, model={"options": options}).model_copy()
    params = params.model_copy(update={"augment": params.augment.model_copy(update=aug)})
    whole = make_layout(tmp_path / "whole")
    training.train(params, whole)
    part = make_layout(tmp_path / "part")
    training.train(params.model_copy(update={"train": params.train.model_copy(update={"steps": 6})}), part)
    assert training.train(params, part)["resumed_from"] == 6
    curve = lambda layout: [(r["step"], r["augment_p"], r["r_t"], r.get("augment_gap")) for r in trainlog.read(layout.train_log)]  # noqa: E731
    assert curve(whole) == curve(part)
    # What steered p moved (p itself, or with held_out the gap, which needs the held-out stream
    # restored exactly: in 12 steps D memorises nothing, so p stays 0 there).
    assert len({row[1 if signal == "r_t" else 3] for row in curve(whole)}) > 2
    assert all((row[3] is not None) == (signal == "held_out") for row in curve(whole))
    a = torch.load(whole.generator, weights_only=True)["state_dict"]
    b = torch.load(part.generator, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_with_augmentation_and_packing(tmp_path, loss):
    """Adaptive where the loss gives D a decision boundary (r_t reads D there), on every sample where not."""
    adaptive = boundary(loss) is not None
    params = make_params(loss=loss, model={"pack": 2}, steps=4, log_every=2)
    params = params.model_copy(update={"augment": params.augment.model_copy(update={"policy": "jitter", "adaptive": adaptive})})
    layout = make_layout(tmp_path)
    summary = training.train(params, layout)
    assert summary["steps"] == 4 and math.isfinite(summary["loss_d"])
    rows = trainlog.read(layout.train_log)
    assert all((r.get("r_t") is not None) == adaptive for r in rows)


def test_image_policies_train_a_dcgan(tmp_path):
    from gancore.config import validate

    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    meta = image_meta("mnist", [1, 28, 28], 32, 16, {"count": None})
    layout = make_layout(tmp_path, PreparedData(meta, images, images[:16]))
    params = validate(
        {
            "device": "cpu",
            "data": {"name": "mnist"},
            "model": {"arch": "dcgan", "latent_dim": 8, "options": {"width": 4}},
            "train": {"steps": 2, "batch_size": 8, "log_every": 1, "checkpoint_every": 2, "monitor_every": None},
            "augment": {"policy": "translation,cutout,color,geometric,blit,ada_color"},
            "mixture": {"enabled": False},
            "tracking": {"enabled": False},
        }
    )
    assert training.train(params, layout)["steps"] == 2
    assert trainlog.read(layout.train_log)[-1]["augment_p"] == 1.0  # a fixed policy: every sample


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))]
)
@pytest.mark.parametrize(
    "loss, augment",
    [
        ("wasserstein_gp", {"policy": "color,translation,cutout"}),  # a critic has no boundary: p = 1
        ("non_saturating", {"policy": "color,translation,cutout", "adaptive": True, "signal": "held_out"}),
    ],
    ids=["penalty", "held-out p"],
)
def test_a_compiled_step_trains_as_the_eager_one_with_augmentation_packing_and_a_penalty(tmp_path, device, loss, augment):
    """train.compile: true (forced on the CPU too, with the torch.compile a GPU uses):
    G's update through the compiled D and the gradient penalty, which differentiates D's gradient
    (no double backward through a compiled module), and a p steered by held-out examples (a penalty
    needs the Wasserstein critic, and an adaptive p a D with a decision boundary, so two runs),
    train the same losses as eager, across a resume.
    Tolerance: on the CPU the compiled kernels reorder float32 sums (about 1e-7 relative each); six
    Adam steps keep that near 1e-6, so 1e-4 still catches a wrong graph (a penalty dropped moves
    loss_d by 1e-1). On CUDA both sides run under bf16 autocast (8 mantissa bits: 4e-3 relative per
    rounding), and fused kernels round at other places, so 3e-2 there: still under that 1e-1. There
    p moves slowly (kimg 50: 3e-4 an update), since a near-tie in the held-out signal that rounding
    flips would move a fast p (0.32 an update at kimg 0.05) and every loss after it."""
    from gancore.config import validate

    images = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    meta = image_meta("mnist", [1, 28, 28], 64, 32, {"count": None})
    logs = {}
    kimg = 0.05 if device == "cpu" else 50
    for compiled in (False, True):
        tree = {
            "device": device,
            "data": {"name": "mnist"},
            # a penalty is refused beside a batch-normalised critic
            "model": {"arch": "dcgan", "latent_dim": 8, "pack": 2, "options": {"width": 8, "d_batch_norm": loss != "wasserstein_gp"}},
            "loss": {"name": loss},
            "train": {"steps": 6, "batch_size": 8, "log_every": 1, "checkpoint_every": 3, "compile": compiled},
            "augment": {**augment, "kimg": kimg, "interval": 2},
            "mixture": {"enabled": False},
            "tracking": {"enabled": False},
        }
        layout = make_layout(tmp_path / str(compiled), PreparedData(meta, images[:64], images[64:]))
        training.train(validate({**tree, "train": {**tree["train"], "steps": 3}}), layout)
        assert training.train(validate(tree), layout)["resumed_from"] == 3
        logs[compiled] = trainlog.read(layout.train_log)
    assert [r["step"] for r in logs[True]] == [r["step"] for r in logs[False]] == list(range(1, 7))
    tolerance = 1e-4 if device == "cpu" else 3e-2
    for eager, compiled in zip(logs[False], logs[True]):
        for key in ("loss_d", "loss_g", "augment_p"):
            assert compiled[key] == pytest.approx(eager[key], rel=tolerance, abs=tolerance / 10), (eager["step"], key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_dcgan_trains_and_resumes_on_cuda_with_held_out_steered_augmentation_and_packing(tmp_path):
    """The issue's "on the GPU": every image transform, p steered by held-out examples and packing
    on CUDA (the gradient penalty on CUDA: the compiled-step test's penalty case), stopped at a checkpoint and resumed there with p and the
    held-out stream carried over (bit equality is the CPU test's: CUDA kernels may reorder sums).
    The collapse monitor logs D's memorisation figures on the way, and the diagnosis measures them
    with the trained D on the device (the examples live on the CPU)."""
    from gancore.config import validate
    from gancore.diagnostics import memorisation
    from gancore.modelio import load_discriminator

    images = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    meta = image_meta("mnist", [1, 28, 28], 64, 32, {"count": None})
    tree = {
        "device": "cuda",
        "data": {"name": "mnist"},
        "model": {"arch": "dcgan", "latent_dim": 8, "pack": 2, "options": {"width": 8}},
        "train": {"steps": 8, "batch_size": 8, "log_every": 1, "checkpoint_every": 4, "monitor_every": 4},
        "augment": {
            "policy": "color,translation,cutout,geometric,blit,ada_color",
            "adaptive": True,
            "signal": "held_out",
            "kimg": 0.05,
            "interval": 2,
        },
        "mixture": {"enabled": False},
        "tracking": {"enabled": False},
    }
    layout = make_layout(tmp_path, PreparedData(meta, images[:64], images[64:]))
    training.train(validate({**tree, "train": {**tree["train"], "steps": 4}}), layout)
    assert torch.load(layout.checkpoint, weights_only=False)["device"] == "cuda"
    assert training.train(validate(tree), layout)["resumed_from"] == 4
    rows = trainlog.read(layout.train_log)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) and 0.0 <= r["augment_p"] <= 1.0 for r in rows)
    assert all(r["augment_gap"] is not None for r in rows if r["step"] % 2 == 0)
    assert all(math.isfinite(r["monitor/d_gap"]) for r in rows if r["step"] % 4 == 0)
    data = PreparedData(meta, images[:64], images[64:])
    figures = memorisation.summarise([memorisation.counts(load_discriminator(layout.discriminator, "cuda"), data, 2, 0)])
    assert figures is not None and figures["n"] == 16 and -1.0 <= figures["gap"] <= 1.0


def test_unknown_or_misplaced_policies_exit_2(capsys, tmp_path):
    for sets, message in (
        (
            ["augment.policy=flip"],
            "augment.policy: unknown 'flip'; allowed: color, translation, cutout, geometric, blit, ada_color, jitter",
        ),
        (["augment.policy=cutout"], "augment.policy: cutout cannot augment vector data (ring8); use jitter"),
        (["augment.adaptive=true"], "augment.adaptive: needs augment.policy"),
        (["augment.policy=jitter", "augment.signal=held_out"], "augment.signal: held_out steers the adaptive p: set augment.adaptive=true"),
        (["augment.policy=jitter,"], "augment.policy: 'jitter,' has an empty name; give names separated by single commas"),
        (["augment.policy=jitter,jitter"], "augment.policy: jitter listed twice; each transform applies once, e.g. jitter"),
        (["augment.kimg=inf"], "augment.kimg: Input should be a finite number"),
    ):
        args = ["train", "--params", str(PARAMS), "--out", str(tmp_path)] + [a for s in sets for a in ("-S", s)]
        assert main(args) == 2
        assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_jitter_is_a_share_of_the_spread_within_the_modes():
    """The whole data's spread is the modes' layout: on ring8 the default share (0.05 of each
    coordinate's sd, 0.036) blurred every mode by 3.6 of its sigmas for a single GAN. It is a share
    of the modes' own spread now: sigma for a generating mixture, the weight-pooled variances for a
    fitted one; a mixture part (one cluster) and data without modes keep their own sd."""
    from gancore.data.prepared import PreparedData
    from gancore.training.augment import jitter_scale

    ring = ring_data(n_train=2000)
    assert torch.equal(jitter_scale(ring), torch.full((2,), 0.05))
    assert float(ring.train.std(0).min()) > 10 * 0.05  # the layout's sd, what it was
    fitted = {"weights": [0.75, 0.25], "means": [[0.0, 0.0], [5.0, 5.0]], "variances": [[1.0, 4.0], [9.0, 0.25]], "estimated": True}
    points = PreparedData({**ring.meta, "modes": fitted}, ring.train, ring.test, None, None)
    assert torch.allclose(jitter_scale(points), torch.tensor([(0.75 + 0.25 * 9.0) ** 0.5, (0.75 * 4 + 0.25 * 0.25) ** 0.5]))
    part = PreparedData({**ring.meta, "part": {"index": 0}}, ring.train, ring.test, None, None)
    unknown = PreparedData({**ring.meta, "modes": {}}, ring.train, ring.test, None, None)
    assert torch.equal(jitter_scale(part), ring.train.float().std(0)) and torch.equal(jitter_scale(unknown), ring.train.float().std(0))
