"""The flows' cache of prepared data is keyed on what prepare reads, the contents of data.path
included: an edited points file or image folder is prepared again, not served from the cache."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from gancore.config import load_params
from gancore_flows.pipeline import prepare_key
from helpers import PARAMS


def test_editing_the_file_or_folder_behind_data_path_changes_the_key(tmp_path):
    points = tmp_path / "mine.csv"
    np.savetxt(points, np.random.default_rng(0).standard_normal((40, 2)), delimiter=",", header="a,b", comments="")
    params = load_params(PARAMS, ["data.name=points", f"data.path={points}"], check_plugins=False)
    before = prepare_key(params)
    assert prepare_key(params) == before  # the same contents, the same key
    with points.open("a") as fh:
        fh.write("0.5,0.5\n")
    assert prepare_key(params) != before and prepare_key(params)["data"] == before["data"]

    folder = tmp_path / "images"
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "a.png").write_bytes(b"\x89PNG one")
    params = load_params(PARAMS, ["data.name=image_folder", f"data.path={folder}", "data.image_size=8"], check_plugins=False)
    before = prepare_key(params)
    (folder / "cats" / "b.png").write_bytes(b"\x89PNG two")  # an image added
    added = prepare_key(params)
    assert added != before
    os.utime(folder / "cats" / "a.png", ns=(1, 1))  # an image replaced in place (its time changes)
    assert prepare_key(params) != added
    assert load_params(PARAMS, check_plugins=False) and prepare_key(load_params(PARAMS, check_plugins=False))["source"] is None


def test_packing_changes_the_key_and_the_dvc_stage_reads_it():
    """Prepare folds clusters below a batch of two packed examples into their nearest part, so
    another model.pack is another partition: the cache (and DVC) must prepare again."""
    import yaml

    key = prepare_key(load_params(PARAMS, check_plugins=False))
    assert prepare_key(load_params(PARAMS, ["model.pack=2"], check_plugins=False)) != key
    assert prepare_key(load_params(PARAMS, ["model.options.hidden=8"], check_plugins=False)) == key
    stages = yaml.safe_load((PARAMS.parent / "dvc.yaml").read_text())["stages"]
    assert "model.pack" in stages["prepare"]["params"]


def test_a_sweep_refuses_settings_on_its_swept_axes_with_exit_2(capsys):
    """-S settings apply after each member's own architecture, loss and seed: -S model.arch=dcgan
    made every member a dcgan under labels that said mlp (here the default arch, valid, still refused). Refused before anything runs."""
    from gancore_flows.sweep import main

    assert main(["--params", str(PARAMS), "--loss", "hinge", "--loss", "non_saturating", "-S", "model.arch=mlp"]) == 2
    err = capsys.readouterr().err
    assert "sets: model.arch=mlp would override the swept model.arch; sweep it with archs, losses and seeds" in err
    assert main(["--params", str(PARAMS), "-S", "seed=3", "-S", "train.steps=5"]) == 2
    assert "seed=3 would override" in capsys.readouterr().err
    # every member is validated before Prefect starts: a bad --arch ended in the flow's traceback
    assert main(["--params", str(PARAMS), "--arch", "nope"]) == 2
    assert "model.arch: 'nope' is not an installed architecture" in capsys.readouterr().err


def test_a_cache_hit_into_a_folder_of_other_data_checks_out_the_cached_version(prefect_harness, project):
    """Rerun into an existing --out: a cache hit was taken to be materialised whenever meta.json
    was there, so the folder kept the data of its last run while the flow reported the cached
    version (and training went on from that other data's checkpoint)."""
    from gancore.dvcstore import data_version
    from gancore.layout import Layout
    from gancore.recorder import NULL_RECORDER
    from gancore_flows.params import resolve_params
    from gancore_flows.pipeline import prepared_data

    def prepare(n_train: int, folder: str) -> dict:
        params = resolve_params(project / "params.yaml", sets=[f"data.n_train={n_train}", "mixture.enabled=false"])
        return prepared_data(params, Layout(project / "runs" / folder), project, NULL_RECORDER)

    prepare(1500, "x")
    wanted = prepare(1200, "y")
    again = prepare(1200, "x")
    assert again.get("cached") and again["version"] == wanted["version"]
    assert data_version(Layout(project / "runs" / "x").prepared) == wanted["version"]


def test_flow_parameters_read_params_yaml_as_the_cli_does(tmp_path):
    """With any override (every sweep member, every form run) the file was read by yaml.safe_load,
    which keeps the last of two train: sections without a word."""
    import pytest

    from gancore.errors import ParamsError
    from gancore_flows.params import resolve_params

    twice = tmp_path / "params.yaml"
    twice.write_text(PARAMS.read_text() + "\ntrain:\n  steps: 20\n")
    with pytest.raises(ParamsError, match="'train' is defined twice"):
        resolve_params(twice, {"seed": 1})


def test_the_run_form_offers_params_yaml_s_own_values_auto_included():
    """The form opened on the resolved values, ring8's batch 256 and rates 5e-4 / 1e-3, and a run
    started from it passed them on: switched to images in the form, it trained with them instead
    of the DCGAN recipe; and "auto" could not be typed back."""
    from gancore.config import validate
    from gancore_flows.params import form_hints, override_tree
    from gancore_flows.pipeline import gan_pipeline

    schema = form_hints(gan_pipeline.parameters, PARAMS).model_dump()
    assert schema["properties"]["train"]["default"]["batch_size"] == "auto"
    assert schema["definitions"]["TrainOverrides"]["properties"]["lr_g"]["default"] == "auto"
    form = gan_pipeline.validate_parameters({"train": schema["properties"]["train"]["default"], "data": {"name": "fashion_mnist"}})
    params = validate(override_tree({"train": form["train"], "data": form["data"]}), check_plugins=False)
    assert (params.train.batch_size, params.train.lr_g, params.train.lr_d) == (64, 2e-4, 2e-4)


@pytest.mark.parametrize("dvc", [True, False], ids=["dvc", "no-dvc"])
def test_concurrent_runs_of_the_same_data_prepare_it_once(prefect_harness, project, tmp_path, dvc):
    """A sweep's or a remedy's members that need the same data each prepared it, all at once (an
    MNIST classifier's minutes of CPU per member). One prepares it now; the others wait for the
    key's lock and take it from the cache, which the first commits as its prepare ends: inside a
    member (a task), the record waited for the member's end, and the others missed it."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect import task

    from gancore.dvcstore import data_version
    from gancore.layout import Layout
    from gancore.recorder import NULL_RECORDER
    from gancore_flows.params import resolve_params
    from gancore_flows.pipeline import prepared_data

    if not dvc:  # a project without DVC has no cache to restore from: hits prepared again (a review of a sweep's log)
        shutil.copy(project / "params.yaml", tmp_path / "params.yaml")
        project = tmp_path
    params = resolve_params(project / "params.yaml", sets=["data.n_train=1700", "mixture.enabled=false"])  # a key of its own
    folders = [Layout(project / "runs" / f"together{i}") for i in range(3)]

    @task
    def member(layout: Layout) -> dict:  # as a sweep's member calls it: inside a task of its own
        result = prepared_data(params, layout, project, NULL_RECORDER)
        time.sleep(2)  # the member goes on (trains) after its prepare
        return result

    with ThreadPoolExecutor(len(folders)) as pool:
        results = list(pool.map(member, folders))
    assert sorted(bool(r.get("cached")) for r in results) == [False, True, True]
    assert len({r["version"] for r in results}) == 1
    assert all(data_version(layout.prepared) == results[0]["version"] for layout in folders)
