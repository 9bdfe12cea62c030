"""Packing (PacGAN, model.pack): the discriminator judges groups of m samples, built by the same
plugin at the packed shape; every loss, n_critic, EMA and exact resume work with it."""

from __future__ import annotations

import pytest
import torch

from gancore import training, trainlog
from gancore.config import ParamsError, validate
from gancore.data.prepared import PreparedData
from gancore.modelio import build_pair, load_discriminator, packed_shape
from gancore.names import LOSSES
from helpers import image_meta, make_layout, make_params


def test_packed_shape_concatenates_along_the_first_axis():
    assert packed_shape((2,), 4) == (8,)
    assert packed_shape((3, 32, 32), 2) == (6, 32, 32)


def test_groups_are_consecutive_samples():
    g, d = build_pair("mlp", (2,), 4, {"hidden": 8, "depth": 1}, pack=2)
    trainer_like = training.Trainer.__new__(training.Trainer)
    trainer_like.pack = 2
    x = torch.arange(12.0).reshape(6, 2)
    packed = training.Trainer._packed(trainer_like, x)
    assert packed.shape == (3, 4)
    assert torch.equal(packed[1], torch.tensor([4.0, 5.0, 6.0, 7.0]))  # samples 2 and 3, side by side
    images = torch.arange(4 * 3 * 2 * 2.0).reshape(4, 3, 2, 2)
    grouped = training.Trainer._packed(trainer_like, images)
    assert grouped.shape == (2, 6, 2, 2) and torch.equal(grouped[1, 3:], images[3])


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_packed_and_resumes_exactly(tmp_path, loss):
    """Interrupted at a checkpoint and resumed: weights and log bit-identical to one run; EMA and
    n_critic on; for wasserstein_gp the gradient penalty interpolates packed inputs."""
    params = make_params(loss=loss, model={"pack": 4}, n_critic=2, ema_decay=0.9, steps=6, checkpoint_every=3, log_every=3)
    whole = make_layout(tmp_path / "whole")
    training.train(params, whole)
    part = make_layout(tmp_path / "part")
    training.train(params.model_copy(update={"train": params.train.model_copy(update={"steps": 3})}), part)
    resumed = training.train(params, part)
    assert resumed["resumed_from"] == 3
    for name in ("generator.pt", "discriminator.pt"):
        a = torch.load(whole.models / name, weights_only=True)["state_dict"]
        b = torch.load(part.models / name, weights_only=True)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(trainlog.read(whole.train_log)) == strip(trainlog.read(part.train_log))
    d = load_discriminator(whole.models / "discriminator.pt")
    assert d.net[1].in_features == 4 * 2  # the first linear layer sees 4 packed 2D points
    assert torch.load(whole.models / "discriminator.pt", weights_only=True)["pack"] == 4


@pytest.mark.parametrize(
    "arch, shape, options",
    [
        ("dcgan", (1, 28, 28), {"width": 4}),
        ("resnet_sn", (3, 32, 32), {"width": 4}),
    ],
)
def test_image_architectures_train_packed(tmp_path, arch, shape, options):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, *shape), dtype=torch.uint8, generator=gen)
    meta = image_meta("image_folder", list(shape), 16, 8, {"count": None})
    layout = make_layout(tmp_path, PreparedData(meta, images, images[:8]))
    params = validate(
        {
            "device": "cpu",
            "data": {"name": "image_folder", "path": str(tmp_path), "image_size": shape[-1]},
            "model": {"arch": arch, "latent_dim": 8, "options": options, "pack": 2},
            "train": {"steps": 2, "batch_size": 8, "log_every": 1, "checkpoint_every": 2, "monitor_every": 2},
            "tracking": {"enabled": False},
        },
        check_plugins=True,
    )
    if shape[0] == 1:  # image_folder data are RGB; a grey set stands in through the prepared meta
        params = params.model_copy(update={"data": params.data.model_copy(update={"name": "mnist", "path": None, "image_size": None})})
        layout = make_layout(tmp_path / "grey", PreparedData({**meta, "name": "mnist"}, images, images[:8]))
    summary = training.train(params, layout)
    assert summary["steps"] == 2
    d = load_discriminator(layout.discriminator)
    assert d(torch.zeros(3, 2 * shape[0], *shape[1:])).shape in ((3,), (3, 1))


def test_discriminator_sees_batch_size_packed_examples(tmp_path):
    """PacGAN's protocol: a step draws train.batch_size packed examples of m samples each (m times
    the samples of an unpacked step), whatever batch size; no multiple of m is required."""
    params = make_params(model={"pack": 3}, steps=1, batch_size=10, log_every=1)
    layout = make_layout(tmp_path)
    summary = training.train(params, layout)
    assert summary["steps"] == 1
    seen = []
    d = load_discriminator(layout.discriminator)
    d.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape)))
    trainer = training.Trainer.__new__(training.Trainer)
    trainer.pack, trainer.D, trainer.augment = 3, d, None
    training.Trainer.discriminate(trainer, torch.zeros(30, 2))
    assert seen == [(10, 6)]  # 30 samples -> 10 examples of 3 points (6 numbers)
    with pytest.raises(ParamsError, match=r"train.batch_size: 100 x model.pack=3 samples per step are more than the 256 training examples"):
        training.train(make_params(model={"pack": 3}, steps=1, batch_size=100), make_layout(tmp_path / "big"))
