"""Parameter validation: every bad input names its key path and what would be valid."""

from __future__ import annotations

import pytest
import yaml

from gancore.config import Params, ParamsError, load_params, validate
from gancore.params_tree import apply_overrides, flatten


def problems(tree, **kw):
    with pytest.raises(ParamsError) as info:
        validate(tree, **kw)
    return dict(info.value.problems), str(info.value)


def test_defaults_are_valid_and_describe_ring8_mlp():
    params = validate({}, check_plugins=False)
    assert params.data.name == "ring8" and params.model.arch == "mlp"
    assert params.data_kind == "vector" and params.data_shape == (2,)
    assert params.n_samples == 2500  # the PacGAN 2D protocol


def test_repository_params_yaml_is_valid():
    params = load_params("params.yaml")
    assert params.data.name == "ring8" and params.model.arch == "mlp"


@pytest.mark.parametrize(
    "tree, key, fragment",
    [
        (
            {"data": {"nme": "ring8"}},
            "data.nme",
            "allowed keys here: classifier_epochs, image_size, n_test, n_train, name, on_bad_image, path",
        ),
        ({"bogus": 1}, "bogus", "allowed keys here"),
        ({"train": {"steps": "many"}}, "train.steps", "valid integer"),
        ({"train": {"steps": 0}}, "train.steps", "greater than 0"),
        ({"train": {"beta1": 1.5}}, "train.beta1", "less than 1"),
        ({"data": {"name": "imagenet"}}, "data.name", "'ring8', 'grid25', 'points', 'mnist'"),
        ({"loss": {"name": "wgan"}}, "loss.name", "'minimax', 'non_saturating', 'wasserstein_gp', 'hinge'"),
        ({"evaluate": {"classifier": "resnet"}}, "evaluate.classifier", "'domain', 'inception'"),
        ({"device": "tpu"}, "device", "auto, cpu, cuda, cuda:N, mps"),
        ({"mixture": {"parts": 1}}, "mixture.parts", "one GAN for the whole data: mixture.enabled=false"),
        ({"mixture": {"parts": 1001}}, "mixture.parts", "a number of parts from 2 to 1000"),
        # a union's branches as one problem in words, not pydantic's branch names (mixture.parts.int,
        # mixture.parts.literal['auto'])
        ({"mixture": {"parts": "auto2"}}, "mixture.parts", "should be a whole number, or 'auto' (got 'auto2')"),
        ({"train": {"compile": "maybe"}}, "train.compile", "should be true or false, or 'auto' (got 'maybe')"),
        ({"probe": {"labels_per_class": [0]}}, "probe.labels_per_class.0", "should be greater than 0, or 'all' (got 0)"),
        ({"train": {"str": 3}}, "train.str", "unknown key; allowed keys here: batch_size"),  # a key named like a branch
        # torchrun trained one GAN on the whole data in place of a mixture's part
        ({"train": {"devices": 2}}, "train.devices", "a mixture trains one per part: set mixture.enabled=false"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(tree, key, fragment):
    found, message = problems(tree, check_plugins=False)
    assert key in found, message
    assert fragment in found[key]
    assert not any(k.startswith(f"{key}.") for k in found) and "Value error" not in message


def test_semantic_problems_are_reported_together():
    found, _ = problems({"data": {"name": "image_folder"}, "sample": {"n": 5}}, check_plugins=False)
    assert set(found) == {"data.path", "data.image_size", "sample.n"}


def test_keep_best_and_on_collapse_need_a_monitor_check_within_the_steps():
    """A monitor every 1,000 steps of 20 never checks: keep_best kept nothing (sample.generator=best
    then failed after training) and on_collapse did nothing. A mixture's parts train mixture.steps."""
    found, _ = problems(
        {"train": {"steps": 20, "monitor_every": 1000, "keep_best": "mode_kl", "on_collapse": "stop"}, "mixture": {"enabled": False}},
        check_plugins=False,
    )
    assert "every 1000 steps of train.steps=20" in found["train.keep_best"] and "train.on_collapse" in found
    found, _ = problems(
        {"train": {"steps": 5000, "monitor_every": 1000, "keep_best": "mode_kl"}, "mixture": {"enabled": True, "steps": 500}},
        check_plugins=False,
    )
    assert "mixture.steps=500" in found["train.keep_best"]
    validate({"train": {"steps": 20, "monitor_every": 20, "keep_best": "mode_kl"}, "mixture": {"enabled": False}}, check_plugins=False)


@pytest.mark.parametrize(
    "tree, key",
    [
        ({"train": {"steps": True}}, "train.steps"),  # pydantic took true for 1: one step
        ({"seed": True}, "seed"),
        ({"model": {"latent_dim": True}}, "model.latent_dim"),
        ({"mixture": {"parts": False}}, "mixture.parts"),
    ],
)
def test_a_truth_value_is_no_number(tree, key):
    found, _ = problems(tree, check_plugins=False)
    assert "is a truth value; this setting takes a number or a name" in found[key]


@pytest.mark.parametrize("budgets", [[-5], [0], [], [-5, 0]])
def test_probe_budgets_are_positive_counts_or_all(budgets):
    """-5 took all but 5 examples per class, and [] probed nothing, without a word."""
    found, _ = problems({"probe": {"labels_per_class": budgets}}, check_plugins=False)
    assert any(key.startswith("probe.labels_per_class") for key in found)


def test_counts_too_small_for_the_metrics_are_refused_before_any_work():
    """evaluate.max_real=5 beside dc_k=5 failed only in evaluate, after training and sampling."""
    found, _ = problems({"evaluate": {"max_real": 5}, "sample": {"n": 4}}, check_plugins=False)
    assert "too few for 5 nearest neighbours and 10 splits: use more than 9" in found["evaluate.max_real"]
    assert "too few for 5 nearest neighbours" in found["sample.n"]


def test_the_probe_beside_a_mixture_is_refused_before_anything_trains():
    """The probe needs one discriminator; gan-pipeline trained and scored the whole mixture first."""
    found, _ = problems({"probe": {"enabled": True}, "mixture": {"enabled": True}}, check_plugins=False)
    assert "set mixture.enabled=false" in found["probe.enabled"]


def test_unknown_architecture_lists_installed_ones():
    found, _ = problems({"model": {"arch": "transformer9000"}})
    assert "mlp" in found["model.arch"] and "dcgan" in found["model.arch"]


def test_architecture_must_support_the_data_shape():
    found, _ = problems({"model": {"arch": "dcgan"}})  # ring8 is 2D vector data
    assert "does not support data shape (2,)" in found["model.arch"]


@pytest.mark.parametrize(
    "model, refused",
    [
        ({"arch": "mlp", "options": {"init": "foo"}}, "mlp option init='foo'; allowed: he, torch"),
        ({"arch": "mlp", "options": {"hidden": 0}}, "mlp needs hidden >= 1 and depth >= 1; got hidden=0"),
        ({"arch": "dcgan", "options": {"width": 0}}, "dcgan option width must be >= 1; got 0"),
    ],
)
def test_option_values_the_plugin_refuses_are_refused_at_validation(model, refused):
    """The plugin's own refusal, found by building its networks at the data's shape; a valid
    build leaves the global random state as it was (training seeds it, but a caller may not)."""
    import torch

    data = {"name": "mnist"} if model["arch"] == "dcgan" else {}
    found, _ = problems({"model": model, "data": data})
    assert refused in found["model.options"] and f"architecture {model['arch']!r} cannot build" in found["model.options"]
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    from gancore import registry

    registry._TRIED.clear()  # so that it builds, whatever this process validated before
    valid = {"hidden": 24} if model["arch"] == "mlp" else {"width": 24}
    assert validate({"model": {**model, "options": valid}, "data": data}).model.options == valid
    assert torch.equal(torch.rand(2), expected)


def test_unknown_architecture_option_names_allowed_options():
    found, _ = problems({"model": {"arch": "mlp", "options": {"wdith": 3}}})
    assert "wdith" in found["model.options"] and "allowed:" in found["model.options"]


def test_overrides_parse_yaml_values_and_create_paths():
    tree = apply_overrides({"train": {"steps": 1}}, ["train.steps=500", "model.options.hidden=64", "train.ema_decay=null"])
    assert tree == {"train": {"steps": 500, "ema_decay": None}, "model": {"options": {"hidden": 64}}}


@pytest.mark.parametrize("bad", ["train.steps", "=3", "train..steps=3"])
def test_malformed_override_is_explained(bad):
    with pytest.raises(ParamsError, match="key.path=value"):
        apply_overrides({}, [bad])


def test_override_into_a_value_is_refused():
    with pytest.raises(ParamsError, match="is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="is not a file; pass a params.yaml"):
        load_params(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"seed: 0\n# caf\xe9\n")
    with pytest.raises(ParamsError, match="not UTF-8 text .* save it as UTF-8"):
        load_params(latin)
    # YAML keeps the last of two equal keys: the first section's settings were silently dropped
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  steps: 20\ndata:\n  name: ring8\ntrain:\n  log_every: 5\n")
    with pytest.raises(ParamsError, match="'train' is defined twice \\(lines 1 and 5\\); keep one"):
        load_params(twice)
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  steps: 20\n  steps: 30\n")
    with pytest.raises(ParamsError, match="'steps' is defined twice \\(lines 2 and 3\\)"):
        load_params(nested)


def test_digest_is_stable_and_section_scoped():
    a = validate({"train": {"steps": 10}}, check_plugins=False)
    b = validate({"train": {"steps": 20}}, check_plugins=False)
    assert a.digest() == validate({"train": {"steps": 10}}, check_plugins=False).digest()
    assert a.digest() != b.digest()
    assert a.digest("data", "model") == b.digest("data", "model")


def test_flatten_gives_dotted_keys():
    flat = validate({"model": {"options": {"hidden": 8}}}, check_plugins=False).flat()
    assert flat["data.name"] == "ring8" and flat["train.steps"] == 5000 and flat["model.options.hidden"] == 8


def test_the_models_defaults_are_params_yaml():
    """One source of defaults: an empty parameter file means exactly what params.yaml says."""
    from helpers import PARAMS

    assert load_params(PARAMS, check_plugins=False) == Params()


def test_image_shapes_follow_native_size_or_override():
    assert validate({"data": {"name": "mnist"}}, check_plugins=False).data_shape == (1, 28, 28)
    assert validate({"data": {"name": "mnist", "image_size": 64}}, check_plugins=False).data_shape == (1, 64, 64)
    stacked = validate({"data": {"name": "stacked_mnist"}}, check_plugins=False)
    assert stacked.data_shape == (3, 28, 28) and stacked.n_samples == 26000


def test_params_file_round_trip(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(Params().model_dump(mode="json")))
    assert load_params(path, check_plugins=False) == Params()
    assert flatten({"a": {"b": {}}}) == {"a.b": {}}
