"""Training: outputs, exact resume, refusal of foreign checkpoints, NaN handling, n_critic, devices.

Runs are tiny (an MLP of width 16 on 256 ring points, a few steps) so the module stays fast on a
busy 2-core machine; exactness claims are checked bit for bit on the CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from gancore import training, trainlog
from gancore.checkpoint import load_checkpoint
from gancore.config import validate
from gancore.data.prepared import PreparedData, save_prepared
from gancore.device import resolve_device, software
from gancore.errors import GanCoreError, TrainingError
from gancore.losses import GanLoss, get_loss
from gancore.modelio import load_discriminator, load_generator
from helpers import image_meta, make_layout, make_params, ring_data, state_equal


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# -- devices ----------------------------------------------------------------------------------
def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    assert resolve_device("cpu").type == "cpu"


def test_explicit_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GanCoreError, match="CUDA is not available.*device=auto or device=cpu"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(GanCoreError, match="only 1 CUDA device"):
        resolve_device("cuda:1")


def test_compile_auto_is_eager_and_compiling_drops_channels_last():
    """auto compiles nowhere (on the lent H200 a compiled DCGAN with channels_last failed in
    inductor's convolution backward); true compiles, and then leaves the layout to the compiler."""
    from gancore.training import use_channels_last, use_compile

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [use_compile("auto", d) for d in (cuda, cpu)] == [False, False]
    assert [use_compile(v, cuda) for v in (True, False)] == [True, False]
    assert use_channels_last(True, compiled=False) and not use_channels_last(True, compiled=True)
    assert not use_channels_last(False, compiled=False) and not use_channels_last(True, compiled=False, setting=False)
    assert use_channels_last(True, compiled=True, setting=True) and not use_channels_last(False, compiled=False, setting=True)


def _image_run(tmp_path, name: str):
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    meta = image_meta("cifar10", [3, 32, 32], 32, 8, {"count": 10, "definition": "class"})
    layout = make_layout(tmp_path / name, PreparedData(meta, images[:32], images[32:]))
    tree = {
        "seed": 0,
        "device": "cpu",
        "data": {"name": "cifar10", "n_train": 32, "n_test": 8},
        "model": {"arch": "dcgan", "latent_dim": 8, "options": {"width": 4}},
        "train": {"steps": 6, "batch_size": 8, "log_every": 1, "checkpoint_every": 3, "monitor_every": None},
        "mixture": {"enabled": False},
        "tracking": {"enabled": False},
    }
    return layout, tree


def test_image_models_train_channels_last_on_the_cpu_resume_exactly_and_match_contiguous_to_rounding(tmp_path):
    """train.channels_last auto lays image models out channels_last on the CPU too (oneDNN's fast
    convolutions); a resume stays bit-exact, a contiguous checkpoint resumes under it (the layout
    is not part of a run's identity), and contiguous training gives the same losses up to float32
    rounding in the convolutions' summation order."""
    runs = {}
    for name, setting in (("last", "auto"), ("plain", False)):
        layout, tree = _image_run(tmp_path, name)
        tree["train"]["channels_last"] = setting
        training.train(validate(tree), layout)
        runs[name] = layout
    weight = lambda layout: torch.load(layout.checkpoint, weights_only=False)["trainer"]["generator"]["net.0.weight"]  # noqa: E731
    assert weight(runs["last"]).is_contiguous(memory_format=torch.channels_last) and not weight(runs["last"]).is_contiguous()
    assert weight(runs["plain"]).is_contiguous()
    losses = {n: [r[k] for r in trainlog.read(layout.train_log) for k in ("loss_d", "loss_g")] for n, layout in runs.items()}
    # Six Adam steps at lr 2e-4 from the same weights: rounding (~1e-6 relative per convolution)
    # moves a loss of order 1 by far less than 1e-4.
    assert len(losses["last"]) == 12 and losses["last"] == pytest.approx(losses["plain"], rel=1e-4, abs=1e-5)

    # a checkpoint of one layout, continued in the other, goes on as either run does (fused Adam
    # walks a weight and its moments as flat memory: moments left in the saved layout paired
    # with other weights, and step 4's loss_g moved by 1e-2)
    for first, then in (("auto", False), (False, "auto")):
        layout, tree = _image_run(tmp_path, f"resumed-{first}")
        training.train(validate({**tree, "train": {**tree["train"], "steps": 3, "channels_last": first}}), layout)
        assert training.train(validate({**tree, "train": {**tree["train"], "channels_last": then}}), layout)["resumed_from"] == 3
        resumed = [r[k] for r in trainlog.read(layout.train_log) for k in ("loss_d", "loss_g")]
        assert resumed == pytest.approx(losses["plain"], rel=1e-4, abs=1e-5), (first, then)
    layout, tree = _image_run(tmp_path, "exact")
    training.train(validate({**tree, "train": {**tree["train"], "steps": 3}}), layout)
    assert training.train(validate(tree), layout)["resumed_from"] == 3
    whole, part = (torch.load(x.generator, weights_only=True)["state_dict"] for x in (runs["last"], layout))
    assert state_equal(whole, part)


# -- a run and its outputs ------------------------------------------------------------------------
def test_train_writes_models_log_and_checkpoint(tmp_path):
    layout = make_layout(tmp_path)
    params = make_params(steps=5, log_every=2, checkpoint_every=2)
    summary = training.train(params, layout)

    assert summary["steps"] == 5 and summary["resumed_from"] is None and summary["device"] == "cpu"
    assert summary["samples_per_second"] > 0 and summary["seconds"] > 0
    assert summary["software"] == software("cpu")  # the install a rerun reproduces these bits on
    rows = trainlog.read(layout.train_log)
    assert layout.train_log.read_text().splitlines()[0].split(",") == list(trainlog.COLUMNS)
    assert [r["step"] for r in rows] == [2, 4, 5]  # every log_every steps, and the last one
    assert summary["loss_d"] == rows[-1]["loss_d"] and summary["loss_g"] == rows[-1]["loss_g"]
    for r in rows:
        assert 0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1
        # D's loss for non_saturating is -V exactly: the value column is the same number negated.
        assert r["value"] == pytest.approx(-r["loss_d"], rel=1e-6)
        assert r["d_real"] == pytest.approx(1 / (1 + math.exp(-r["logit_real"])), abs=0.05)
        assert r["grad_norm_g"] > 0 and r["grad_norm_d"] > 0
    # bn_drift_g compares with the previous row: none for the first, a number after.
    assert rows[0]["bn_drift_g"] is None and all(r["bn_drift_g"] > 0 for r in rows[1:])
    assert not list(tmp_path.rglob("*.tmp"))

    for name in ("generator.pt", "discriminator.pt"):
        record = torch.load(layout.models / name, weights_only=True)
        assert record["arch"] == "mlp" and record["latent_dim"] == 4 and record["shape"] == [2]
        assert record["kind"] == "vector" and record["step"] == 5 and record["ema"] is False
        assert record["options"]["hidden"] == 16 and record["options"]["g_activation"] == "relu"
        assert len(record["params_digest"]) == 64
    g = load_generator(layout.models / "generator.pt")
    d = load_discriminator(layout.models / "discriminator.pt")
    assert not g.training and not d.training
    with torch.no_grad():
        assert g(torch.randn(7, 4)).shape == (7, 2) and d(torch.randn(7, 2)).reshape(-1).shape == (7,)
    assert load_checkpoint(layout.checkpoint)["step"] == 5


def test_prepared_data_must_match_the_parameters(tmp_path):
    layout = make_layout(tmp_path)
    params = validate({**make_params().model_dump(), "data": {"name": "grid25"}})
    with pytest.raises(TrainingError, match="'ring8'.*'grid25'.*gan prepare"):
        training.train(params, layout)


# -- resume ---------------------------------------------------------------------------------------
def test_interrupted_run_resumes_to_identical_weights_and_log(tmp_path, monkeypatch):
    k = 6
    # Everything that draws randomness or carries state: GP interpolates, two critic batches per
    # step, EMA, batch norm (drift column), epochs that wrap (256 / 32 = 8 batches), and a
    # checkpoint between log rows (log_every=4 does not divide k).
    params = make_params(loss="wasserstein_gp", n_critic=2, ema_decay=0.8, steps=2 * k, checkpoint_every=k, log_every=4)
    a, b = make_layout(tmp_path / "a"), make_layout(tmp_path / "b")
    training.train(params, a)

    real_step = training.Trainer.step

    def crash(self, step, stats=False):
        if step == k + 3:
            raise RuntimeError("simulated crash")
        return real_step(self, step, stats)

    monkeypatch.setattr(training.Trainer, "step", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        training.train(params, b)
    assert load_checkpoint(b.checkpoint)["step"] == k
    assert [r["step"] for r in trainlog.read(b.train_log)] == [4]  # rows up to the checkpoint
    monkeypatch.setattr(training.Trainer, "step", real_step)

    summary = training.train(params, b)
    assert summary["resumed_from"] == k and summary["steps"] == 2 * k
    for name in ("generator.pt", "discriminator.pt"):
        ra, rb = (torch.load(x.models / name, weights_only=True) for x in (a, b))
        assert state_equal(ra["state_dict"], rb["state_dict"]), name
    ca, cb = load_checkpoint(a.checkpoint), load_checkpoint(b.checkpoint)
    for part in ("generator", "discriminator", "ema"):
        assert state_equal(ca["trainer"][part], cb["trainer"][part]), part
    assert without_seconds(trainlog.read(a.train_log)) == without_seconds(trainlog.read(b.train_log))


def test_foreign_checkpoint_is_refused_and_restart_starts_over(tmp_path):
    layout = make_layout(tmp_path)
    training.train(make_params(steps=4, checkpoint_every=2), layout)

    with pytest.raises(TrainingError) as info:
        training.train(make_params(steps=4, checkpoint_every=2, loss="hinge"), layout)
    message = str(info.value)
    assert "loss.name: 'non_saturating' in the checkpoint, 'hinge' now" in message
    assert "gan train --restart" in message and "train (" not in message and "model (" not in message

    with pytest.raises(TrainingError, match=r"model \(model.options.hidden: 16 in the checkpoint, 32 now\)"):
        training.train(make_params(steps=4, checkpoint_every=2, hidden=32), layout)

    with pytest.raises(TrainingError, match="beyond train.steps=3"):
        training.train(make_params(steps=3, checkpoint_every=2), layout)

    # Neutral keys (how long, how often) do not make a different run: a longer run continues.
    longer = training.train(make_params(steps=6, checkpoint_every=5, log_every=3), layout)
    assert longer["resumed_from"] == 4 and longer["steps"] == 6

    same = training.train(make_params(steps=6), layout)
    assert same["resumed_from"] == 6 and same["samples_per_second"] is None

    fresh = training.train(make_params(steps=4, checkpoint_every=2, loss="hinge"), layout, restart=True)
    assert fresh["resumed_from"] is None and fresh["steps"] == 4
    assert load_checkpoint(layout.checkpoint)["identity"]["loss"]["name"] == "hinge"
    assert [r["step"] for r in trainlog.read(layout.train_log)] == [2, 4]


def test_data_settings_in_other_words_for_the_same_prepared_data_resume_as_the_same_run(tmp_path):
    """The data check passes n_train null beside the count prepared and data.path naming the same
    file otherwise; the checkpoint refused them ("data.n_train: None in the checkpoint, 256 now")
    though the prepared data, part of its identity, were the same bytes. (A review's.)"""
    from gancore.checkpoint import identity_digest

    def with_data(train=None, **data):
        tree = make_params(steps=4, checkpoint_every=2).model_dump(mode="json")
        return validate({**tree, "data": {**tree["data"], **data}, "train": {**tree["train"], **(train or {})}})

    layout = make_layout(tmp_path)
    training.train(with_data(), layout)  # n_train 256
    written = load_checkpoint(layout.checkpoint)
    resumed = training.train(with_data(n_train=None, train={"steps": 6}), layout)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    after = load_checkpoint(layout.checkpoint)  # it went on as itself: the same identity, so keep_best's files still match
    assert after["identity"] == written["identity"] and after["digest"] == identity_digest(written["identity"])
    assert torch.load(layout.generator, weights_only=True)["params_digest"] == written["digest"]

    # Where the monitor acts on collapse, the epochs of the image classifier it reads still count;
    # vector data get a Gaussian posterior whatever classifier_epochs (the data check passes it too)
    acting = {"on_collapse": "stop", "monitor_every": 4, "steps": 8}
    layout = make_layout(tmp_path / "acting")
    training.train(with_data(train=acting), layout)
    resumed = training.train(with_data(classifier_epochs=3, train={**acting, "steps": 10}), layout)
    assert resumed["resumed_from"] == 8
    from gancore.checkpoint import check_resumable, run_identity

    def image_run(epochs: int) -> dict:
        tree = with_data(train=acting).model_dump(mode="json")
        return run_identity(validate({**tree, "data": {"name": "mnist", "classifier_epochs": epochs}}), "same bytes")

    saved = image_run(8)
    state = {"identity": saved, "digest": identity_digest(saved), "step": 8}
    check_resumable(layout.checkpoint, state, image_run(8), 10)
    with pytest.raises(TrainingError, match=r"data \(data.classifier_epochs: 8 in the checkpoint, 3 now\)"):
        check_resumable(layout.checkpoint, state, image_run(3), 10)


def test_a_checkpoint_from_before_an_option_existed_resumes_under_its_legacy_value(tmp_path):
    """mlp's ``legacy`` {"init": "torch"}: under init=torch a run's identity leaves the option out,
    as the release before it wrote it, so such a checkpoint continues; under He's start it is
    another run, named."""
    layout = make_layout(tmp_path)
    options = {"hidden": 16, "depth": 2, "batch_norm": True}
    training.train(make_params(steps=4, checkpoint_every=2, model={"options": {**options, "init": "torch"}}), layout)
    written = load_checkpoint(layout.checkpoint)["identity"]["model"]["options"]
    assert "init" not in written and written["hidden"] == 16

    with pytest.raises(TrainingError, match=r"model \(model.options.init: '\(absent\)' in the checkpoint, 'he' now\)"):
        training.train(make_params(steps=6, model={"options": options}), layout)
    resumed = training.train(make_params(steps=6, model={"options": {**options, "init": "torch"}}), layout)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6


def test_changed_prepared_data_is_refused(tmp_path):
    layout = make_layout(tmp_path)
    training.train(make_params(steps=2), layout)
    save_prepared(layout.prepared, ring_data(seed=1))  # same parameters, different content
    with pytest.raises(TrainingError, match="prepared_data"):
        training.train(make_params(steps=2), layout)


# -- failure --------------------------------------------------------------------------------------
def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    base = get_loss("non_saturating")
    calls = {"g": 0}

    def poisoned_g(l_fake):
        calls["g"] += 1
        return base.g(l_fake) * (float("nan") if calls["g"] == 7 else 1.0)

    monkeypatch.setattr(training, "get_loss", lambda name, gp_weight=10.0: GanLoss(name, base.d, poisoned_g))
    layout = make_layout(tmp_path)
    # log_every is large: the failure is found at the step-10 checkpoint, yet reported at step 7.
    with pytest.raises(TrainingError, match=r"non-finite loss_d=[-0-9.e]+ loss_g=nan at step 7;.*step 5\) was kept"):
        training.train(make_params(steps=20, checkpoint_every=5, log_every=100), layout)
    state = load_checkpoint(layout.checkpoint)
    assert state["step"] == 5
    assert all(torch.isfinite(t).all() for t in state["trainer"]["generator"].values() if t.is_floating_point())
    assert not (layout.models / "generator.pt").exists()
    assert not list(tmp_path.rglob("*.tmp"))


# -- the step ---------------------------------------------------------------------------------------
def test_n_critic_takes_that_many_discriminator_steps(tmp_path):
    layout = make_layout(tmp_path)
    training.train(make_params(steps=3, n_critic=2), layout)
    state = load_checkpoint(layout.checkpoint)["trainer"]
    assert {float(s["step"]) for s in state["opt_d"]["state"].values()} == {6.0}
    assert {float(s["step"]) for s in state["opt_g"]["state"].values()} == {3.0}


def test_a_layer_the_plugin_froze_stays_frozen():
    """G's step switches D's gradients off and back on: switching all of them back on unfroze a
    plugin's fixed feature layer, which Adam then moved (and which DDP, having wrapped it frozen,
    no longer kept equal across ranks)."""
    torch.manual_seed(0)
    g = torch.nn.Linear(3, 2)
    feature = torch.nn.Linear(2, 4).requires_grad_(False)
    d = torch.nn.Sequential(feature, torch.nn.LeakyReLU(0.2), torch.nn.Linear(4, 1))
    batches = training.BatchStream(torch.randn(64, 2), 16, seed=0, device="cpu", resident=True)
    trainer = training.Trainer(g, d, get_loss("non_saturating"), batches, latent_dim=3, lr_g=0.1, lr_d=0.1, betas=(0.5, 0.9))
    frozen, head = feature.weight.detach().clone(), d[2].weight.detach().clone()
    for step in range(1, 4):
        trainer.step(step)
    assert not feature.weight.requires_grad and torch.equal(feature.weight, frozen)
    assert d[2].weight.requires_grad and not torch.equal(d[2].weight, head)


def test_batches_are_epochs_of_a_seeded_permutation():
    data = torch.arange(10, dtype=torch.float32)[:, None]
    stream = training.BatchStream(data, 3, seed=5, device="cpu", resident=True)
    epoch = torch.cat([next(stream) for _ in range(3)])[:, 0]
    assert len(set(epoch.tolist())) == 9  # 3 full batches of 3 distinct examples; the 10th is dropped
    again = training.BatchStream(data, 3, seed=5, device="cpu", resident=False)
    assert torch.equal(torch.cat([next(again) for _ in range(3)])[:, 0], epoch)
    with pytest.raises(TrainingError, match="batch_size=11 is larger than the 10"):
        training.BatchStream(data, 11, seed=5, device="cpu", resident=True)


def test_resident_and_streamed_data_train_identically(tmp_path):
    outs = []
    for mode in ("always", "never"):
        layout = make_layout(tmp_path / mode)
        training.train(make_params(steps=4, resident_data=mode), layout)
        outs.append(torch.load(layout.models / "generator.pt", weights_only=True)["state_dict"])
    assert state_equal(*outs)


def test_uint8_images_train_in_model_range(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8, generator=gen)
    meta = image_meta("mnist", [1, 28, 28], 40, 8, {"count": 10, "definition": "digit class"})
    layout = make_layout(tmp_path, PreparedData(meta, images[:40], images[40:]))
    stream = training.BatchStream(images, 16, seed=0, device="cpu", resident=True)
    x = next(stream)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9

    params = validate(
        {
            "seed": 0,
            "device": "cpu",
            "data": {"name": "mnist", "n_train": 40, "n_test": 8},
            "model": {"arch": "dcgan", "latent_dim": 8, "options": {"width": 4}},
            "train": {"steps": 2, "batch_size": 8, "log_every": 1},
            "sample": {"n": 16},
            "tracking": {"enabled": False},
        }
    )
    summary = training.train(params, layout)
    assert summary["steps"] == 2
    g = load_generator(layout.models / "generator.pt")
    with torch.no_grad():
        out = g(torch.randn(3, 8))
    assert out.shape == (3, 1, 28, 28) and out.abs().max() <= 1


def test_a_longer_run_continues_a_shorter_one_to_the_same_log(tmp_path):
    """3 steps, then continued to 6, against 6 from the start (log every 2): the shorter run logged
    its last step, 3, off the grid; the longer one drops that row, and G's batch-norm drift at step
    4 is measured from step 2 as in the uninterrupted run (it was measured from 3)."""

    common = {"ema_decay": 0.9, "log_every": 2, "checkpoint_every": 3, "monitor_every": None}
    whole, continued = make_layout(tmp_path / "whole"), make_layout(tmp_path / "continued")
    training.train(make_params(steps=6, **common), whole)
    training.train(make_params(steps=3, **common), continued)
    assert [r["step"] for r in trainlog.read(continued.train_log)] == [2, 3]
    training.train(make_params(steps=6, **common), continued)

    def rows(layout):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in trainlog.read(layout.train_log)]

    assert [r["step"] for r in rows(continued)] == [2, 4, 6]
    assert rows(continued) == rows(whole)
