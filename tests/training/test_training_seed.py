"""``train.seed``: training's own seed, beside the top-level one that also draws the data.

A run with ``seed: 5`` and one with ``seed: 3, train.seed: 5`` trained on the same prepared data
must be the same training bit for bit (every stream training draws from follows ``train.seed``:
the initial weights, the batch order, the latent noise, the augmentation's draws and the held-out
batches that steer it), and null must be the top-level seed itself, so that every run and
checkpoint made before the setting existed stays what it was.
"""

from __future__ import annotations

import pytest
import torch

from gancore import training
from gancore.checkpoint import identity_digest, load_checkpoint, run_identity
from gancore.config import ParamsError, validate
from gancore.errors import TrainingError
from helpers import make_layout, make_params

# Every stream: EMA, two critic batches per step, and augmentation steered by held-out examples.
STREAMS = {"steps": 6, "n_critic": 2, "ema_decay": 0.8, "checkpoint_every": 3, "log_every": 2}
AUGMENT = {"policy": "jitter", "adaptive": True, "signal": "held_out", "kimg": 1.0, "interval": 2}


def params_with(seed: int, train_seed: int | None, **train):
    tree = make_params(**{**STREAMS, **train}).model_dump(mode="json")
    tree["seed"] = seed
    tree["train"]["seed"] = train_seed
    tree["augment"] = AUGMENT
    return validate(tree)


def trained(tmp_path, name: str, params) -> dict:
    """The trainer's whole state at the end: weights, optimisers, and every stream's generator and
    position (batches, held-out batches, noise, the augmentation's draws)."""
    layout = make_layout(tmp_path / name)  # the same prepared data in every folder
    training.train(params, layout)
    return load_checkpoint(layout.checkpoint)["trainer"]


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def test_train_seed_drives_every_training_stream_and_null_is_the_top_level_seed(tmp_path):
    top_five = trained(tmp_path, "seed5", params_with(5, None))
    own_five = trained(tmp_path, "seed3-train5", params_with(3, 5))
    assert same(top_five, own_five), "train.seed=5 under seed=3 trained otherwise than seed=5"

    top_three = trained(tmp_path, "seed3", params_with(3, None))
    for part in ("generator", "batches", "held_out_batches", "noise_rng", "augment"):  # the comparison above can fail
        assert not same(top_three[part], own_five[part]), part
    assert same(top_three, trained(tmp_path, "seed3-train3", params_with(3, 3)))

    # null and the top-level seed are one run: one identity, so either resumes the other
    null, explicit = (identity_digest(run_identity(params_with(3, s), "data")) for s in (None, 3))
    assert null == explicit and "seed" not in run_identity(params_with(3, None), "data")["train"]


def test_a_checkpoint_names_another_training_seed_and_resumes_across_null_and_equal(tmp_path):
    layout = make_layout(tmp_path)
    training.train(params_with(3, 5), layout)
    with pytest.raises(TrainingError, match=r"train \(train.seed: 5 in the checkpoint, 6 now\)"):
        training.train(params_with(3, 6, steps=8), layout)
    with pytest.raises(TrainingError, match=r"train.seed: 5 in the checkpoint, null \(the top-level seed\) now"):
        training.train(params_with(3, None, steps=8), layout)

    plain = make_layout(tmp_path / "plain")
    training.train(params_with(3, None), plain)
    resumed = training.train(params_with(3, 3, steps=8), plain)
    assert resumed["resumed_from"] == 6 and resumed["steps"] == 8


def test_train_seed_is_validated_as_the_seed_is():
    base = make_params().model_dump(mode="json")
    for bad, why in ((-1, "greater than or equal to 0"), (2**32, "less than 4294967296"), (True, "truth value")):
        with pytest.raises(ParamsError, match=rf"train\.seed.*{why}"):
            validate({**base, "train": {**base["train"], "seed": bad}})
    assert validate({**base, "train": {**base["train"], "seed": 7}}).training_seed == 7
    assert validate(base).training_seed == base["seed"]
