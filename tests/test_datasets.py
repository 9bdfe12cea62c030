"""The data set registry (gancore.datasets) is what the parameters, prepare, the classifier and the
protocol read: every spec resolves, and what it says is what the built data are."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import ValidationError

from gancore import codedeps
from gancore.config import Params
from gancore.data.prepare import build_data
from gancore.datasets import NAMES, REGISTRY, dataset
from gancore.layout import Layout
from gancore.names import DATASETS, FILE_DATASETS, VECTOR_DATASETS

REPO = Path(__file__).resolve().parents[1]


def test_the_parameters_offer_exactly_the_registered_data_sets():
    assert DATASETS == NAMES
    assert set(VECTOR_DATASETS) == {n for n, s in REGISTRY.items() if s.kind == "vector"}
    assert set(FILE_DATASETS) == {n for n, s in REGISTRY.items() if s.fetch == "files"}
    schema = Params.model_json_schema()["$defs"]["DataParams"]["properties"]["name"]
    assert tuple(schema["enum"]) == NAMES  # the Prefect form's choices
    with pytest.raises(ValidationError, match="'ring8', 'grid25', 'points'"):
        Params(data={"name": "ring9"})
    with pytest.raises(ValueError, match="unknown data set 'ring9'; choose from ring8, grid25"):
        dataset("ring9")


@pytest.mark.parametrize("name", NAMES)
def test_every_builder_resolves_to_the_registry_signature(name):
    spec = REGISTRY[name]
    build = spec.builder()
    assert list(inspect.signature(build).parameters) == ["spec", "params", "layout"]
    module = spec.build.partition(":")[0]
    # prepare imports it by name: its DVC dependencies and cache key must still include it.
    path = module.replace(".", "/") + ".py"
    assert (REPO / path).is_file()
    assert any(path == dep or path.startswith(dep + "/") for dep in codedeps.stage_deps("prepare"))


@pytest.mark.parametrize("name", NAMES)
def test_kind_shape_and_protocol_come_from_the_spec(name, tmp_path):
    spec = REGISTRY[name]
    data: dict = {"name": name}
    if spec.reads_path:
        data["path"] = str(tmp_path)
    if spec.shape is None and spec.kind == "image":
        data["image_size"] = 48
    # Unvalidated: a file set's path is checked elsewhere (tests/data); here only the spec is read.
    params = Params().model_copy(update={"data": Params().data.model_copy(update=data)})
    assert params.dataset is spec and params.data_kind == spec.kind
    assert params.n_samples == spec.samples == (spec.protocol_n or {"vector": 2500, "image": 10000}[spec.kind])
    if spec.kind == "image":
        side = spec.shape[-1] if spec.shape else 48
        assert params.data_shape == (spec.channels, side, side)
    elif spec.shape is not None:
        assert params.data_shape == spec.shape


@pytest.mark.parametrize("name", VECTOR_DATASETS[:2])
def test_the_built_data_match_their_spec(name, tmp_path):
    spec = REGISTRY[name]
    params = Params(seed=0, data={"name": name, "n_train": 200, "n_test": 50})
    data = build_data(params, Layout(tmp_path))
    assert data.meta["modes"]["count"] == spec.modes
    assert tuple(data.meta["shape"]) == spec.shape and data.meta["kind"] == spec.kind
    assert (data.train_labels is not None) == spec.labelled


def test_a_builder_that_contradicts_its_spec_is_refused(tmp_path, monkeypatch):
    """The spec is checked against what its builder returns (a wrong mode count, missing labels)."""
    from gancore.errors import DataError

    params = Params(seed=0, data={"name": "ring8", "n_train": 100, "n_test": 20})
    monkeypatch.setitem(REGISTRY, "ring8", REGISTRY["grid25"].__class__(**{**REGISTRY["ring8"].__dict__, "modes": 9}))
    with pytest.raises(DataError, match="described 8 modes, but its spec says 9"):
        build_data(params, Layout(tmp_path))


def test_a_name_registered_twice_is_refused():
    from gancore.lazy import by_name

    with pytest.raises(ValueError, match="'ring8' is registered twice"):
        by_name(REGISTRY["ring8"], REGISTRY["grid25"], REGISTRY["ring8"])


def test_the_readme_names_every_data_set():
    readme = (REPO / "README.md").read_text()
    missing = [n for n in NAMES if f"`{n}`" not in readme]
    assert not missing, f"README.md does not mention {missing}"


def test_a_missing_image_size_is_one_clear_problem(tmp_path):
    """image_folder without data.image_size: the missing key is named, and no architecture is
    blamed for the empty shape that follows from it."""
    from gancore.config import ParamsError, validate

    with pytest.raises(ParamsError) as info:
        validate({"data": {"name": "image_folder", "path": str(tmp_path)}, "model": {"arch": "dcgan"}})
    message = str(info.value)
    assert "data.image_size: required for data.name=image_folder" in message
    assert "does not support data shape" not in message
