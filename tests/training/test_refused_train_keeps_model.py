"""A `gan train` that is refused or fails leaves the model that was trained before: the single GAN
and the mixture replace each other only once the new one is written."""

from __future__ import annotations

from gancore.cli import main
from gancore.layout import Layout
from helpers import PARAMS

TINY = [
    "data.n_train=2000",
    "data.n_test=500",
    "mixture.max_parts=3",
    "mixture.steps=10",
    "train.steps=10",
    "train.batch_size=64",
    "train.monitor_every=null",
    "tracking.enabled=false",
]


def _gan(stage: str, out, *extra: str) -> int:
    sets = [a for o in (*TINY, *extra) for a in ("-S", o)]
    return main([stage, "--params", str(PARAMS), "--out", str(out), *sets])


def test_a_refused_train_keeps_the_other_kind_of_model(tmp_path, capsys):
    layout = Layout(tmp_path)
    assert _gan("prepare", tmp_path) == 0
    assert _gan("train", tmp_path, "mixture.enabled=false") == 0
    single = layout.generator.read_bytes()
    # A mixture whose architecture option is refused: the single GAN was deleted before its parts
    # were checked.
    assert _gan("train", tmp_path, "model.options.hidden=-3") != 0
    assert layout.generator.read_bytes() == single and not layout.mixture.exists()
    capsys.readouterr()
    assert _gan("train", tmp_path) == 0
    assert layout.mixture.is_file() and not layout.generator.exists()
    # the mixture's summary names where and on what its parts trained (MLflow's train.* tags)
    printed = capsys.readouterr().out
    assert "device    " in printed and "software  " in printed and "torch" in printed
    manifest = layout.mixture.read_bytes()
    # A single GAN refused because its checkpoint belongs to a different run: the mixture was
    # deleted before the checkpoint was read.
    assert _gan("train", tmp_path, "mixture.enabled=false", "train.lr_g=0.0001") != 0
    assert layout.mixture.read_bytes() == manifest
    assert _gan("sample", tmp_path, "sample.n=100") == 0


def test_a_gradient_penalty_is_refused_with_a_batch_normalised_critic(tmp_path, capsys):
    """WGAN-GP's penalty wants D's unit gradient at each sample on its own; a batch-normalised D's
    output at one sample moves with its batch-mates (gradient norm 0.79 in one batch, 0.63 in
    another, at the same example), and the penalty's interpolates move its running statistics.
    DCGAN's critic has batch norm by default: refused at validation, before prepare, with the
    option that turns it off; the trainer's own check stays for callers that did not validate."""
    import pytest

    from gancore.config import validate
    from gancore.errors import ParamsError
    from gancore.modelio import build_pair, resolve_architecture
    from gancore.training import _penalty_problem

    mnist = {"data": {"name": "mnist"}, "model": {"arch": "dcgan", "options": {"width": 8}}, "loss": {"name": "wasserstein_gp"}}
    with pytest.raises(ParamsError, match=r"loss.name: wasserstein_gp's gradient penalty .* set model.options.d_batch_norm=false"):
        validate(mnist)
    validate({**mnist, "model": {"arch": "dcgan", "options": {"width": 8, "d_batch_norm": False}}})
    validate({**mnist, "loss": {"name": "hinge"}})

    assert (
        main(
            ["prepare", "--out", str(tmp_path / "run"), "-S", "data.name=mnist", "-S", "model.arch=dcgan", "-S", "loss.name=wasserstein_gp"]
        )
        == 2
    )
    assert "set model.options.d_batch_norm=false" in capsys.readouterr().err and not (tmp_path / "run").exists()

    hinge = validate({**mnist, "loss": {"name": "hinge"}})
    params = hinge.model_copy(update={"loss": hinge.loss.model_copy(update={"name": "wasserstein_gp"})})  # not validated
    _, critic = build_pair("dcgan", (1, 28, 28), 8, {"width": 8})
    options = resolve_architecture("dcgan", {"width": 8})[1]
    assert "set model.options.d_batch_norm=false" in _penalty_problem(params, critic, options)
    _, plain = build_pair("dcgan", (1, 28, 28), 8, {"width": 8, "d_batch_norm": False})
    assert _penalty_problem(params, plain, {**options, "d_batch_norm": False}) is None


def test_a_prepare_that_fails_half_way_leaves_nothing_that_looks_prepared(tmp_path, monkeypatch):
    """Interrupted after data.pt and meta.json but before the partition (here: the disk fills as
    mixture.json is written), prepare left data that train and sample took, and the plan read "one
    GAN". Now nothing prepared is left, and train says to run prepare."""
    layout = Layout(tmp_path)
    monkeypatch.setenv("GANCORE_FAULTS", "write:mixture.json=enospc")
    assert _gan("prepare", tmp_path) != 0
    assert not layout.prepared_meta.exists() and not layout.prepared_data.exists()
    monkeypatch.delenv("GANCORE_FAULTS")
    assert _gan("train", tmp_path) != 0
    assert _gan("prepare", tmp_path) == 0 and layout.prepared_meta.is_file() and (layout.prepared / "mixture.json").is_file()
