"""The mixture of GANs: partition, one GAN per part, sampling in proportion, one model to serve;
through the CLI (what dvc repro runs) and through the gan-mixture flow (parts in parallel)."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from gancore.cli import main
from gancore.layout import Layout
from gancore.mixture import MixtureGenerator, load_mixture_generator, mean_log
from helpers import PARAMS, cli_stages

MIXTURE = [
    "data.n_train=2000",
    "data.n_test=1000",
    "mixture.enabled=true",
    "mixture.steps=150",
    "train.batch_size=128",
    "train.checkpoint_every=75",
    "train.log_every=25",
    "train.monitor_every=75",
    "sample.n=800",
    "evaluate.max_real=1000",
    "diagnose.ndb_bins=20",
    "tracking.enabled=false",
]


@pytest.fixture(scope="session")  # pytest-xdist interleaves modules: module scope would rebuild it
def cli_mixture(tmp_path_factory):
    return cli_stages(tmp_path_factory.mktemp("mixture"), MIXTURE, ("prepare", "train", "sample", "evaluate", "diagnose"))


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_the_data_s_eight_clusters_are_found_and_each_part_trains_normalised(cli_mixture):
    layout = cli_mixture
    info = json.loads((layout.prepared / "mixture.json").read_text())
    # mixture.parts: auto, the default: nobody told it the ring has 8 modes.
    assert info["method"] == "kmeans" and len(info["parts"]) == 8 and info["chosen_by"] == "bic"
    selection = info["selection"]
    assert selection["chosen"] == 8 and selection["k"][0] == 1 and min(selection["bic"]) == selection["bic"][7]
    assert json.loads(layout.prepared_meta.read_text())["mixture"]["parts"] == 8
    assert (layout.prepared / "parts_selection.png").stat().st_size > 1000
    assert sum(p["count"] for p in info["parts"]) == 2000
    centers = torch.tensor(json.loads(layout.prepared_meta.read_text())["modes"]["centers"])
    shifts = torch.tensor([p["shift"] for p in info["parts"]])
    # Every part sits on one of the ring's centres (sigma 0.01: its mean within a few 1e-3).
    assert torch.cdist(shifts, centers.float()).min(dim=1).values.max() < 5e-3
    assert len(set(torch.cdist(shifts, centers.float()).argmin(dim=1).tolist())) == 8
    for p in info["parts"]:
        part = layout.part(p["index"])
        data = torch.load(part.prepared_data, weights_only=True)["train"]
        assert data.shape == (p["count"], 2)
        assert data.mean(0).abs().max() < 1e-5 and data.pow(2).mean().sqrt() == pytest.approx(1.0, abs=1e-5)
        assert part.generator.is_file() and part.train_log.is_file()
        assert json.loads(part.prepared_meta.read_text())["own_test"] is True  # held-out points of its own


@pytest.mark.xdist_group("mixture-cli")
def test_a_partition_made_under_other_settings_is_refused_before_training(cli_mixture):
    """``gan train -S mixture.parts=4`` on data prepared with parts: auto trained the 8 prepared
    parts and called them BIC's; settings with the same effect (partition kmeans for vectors)
    pass, and so does one GAN on the whole data."""
    from gancore.config import load_params
    from gancore.errors import DataError
    from gancore.mixture import partition_info, plan_text

    info = partition_info(cli_mixture)
    assert info["settings"] == {"partition": "auto", "parts": "auto", "max_parts": 50, "pack": 1}
    assert sum(info["sizes"]) == 2000 and len(info["sizes"]) == 8
    for sets, differ in (
        (["mixture.parts=4"], 'mixture.parts: "auto" then, 4 now'),
        (["mixture.max_parts=10"], "mixture.max_parts: 50 then, 10 now"),
        (
            ["mixture.partition=kmeans", "mixture.parts=3"],
            'mixture.partition: "auto" then, "kmeans" now; mixture.parts: "auto" then, 3 now',
        ),
    ):
        params = load_params(PARAMS, MIXTURE + sets)
        with pytest.raises(DataError, match=f"mixture.json was made under other settings \\({differ}\\): run `gan prepare`"):
            plan_text(params, cli_mixture)
    same = load_params(PARAMS, MIXTURE + ["mixture.partition=kmeans", "mixture.steps=7"])
    assert partition_info(cli_mixture, same) == info and " x 7 steps each" in plan_text(same, cli_mixture)
    # another model.pack matters only where it folds a cluster the other did not (below 2 x pack rows)
    packed = load_params(PARAMS, MIXTURE + ["model.pack=4"])
    assert partition_info(cli_mixture, packed) == info  # ring8's clusters have ~250 rows: none folds under 8
    from gancore.mixture import _other_settings

    small = {**info, "sizes": [3, 7, *info["sizes"]]}  # (3 rows fold under pack 2 and 4; 7 under 4 alone)
    assert _other_settings(packed, small) == ["model.pack: 1 then, 4 now, which folds clusters of 3, 7 rows otherwise"]
    pack2 = load_params(PARAMS, MIXTURE + ["model.pack=2"])
    assert _other_settings(pack2, {**info, "sizes": [7, *info["sizes"]]}) == []
    assert plan_text(load_params(PARAMS, MIXTURE + ["mixture.enabled=false", "mixture.parts=4"]), cli_mixture).startswith("plan: one GAN")


def test_gan_train_refuses_a_partition_made_under_other_settings_and_trains_nothing(tmp_path, capsys):
    """The refusal as a user meets it: ``gan train`` after ``gan prepare`` with another part count
    exits 1 with the settings named, before any part trains; prepare with them, and it trains."""
    sets = ["data.n_train=400", "data.n_test=200", "mixture.steps=2", "train.batch_size=32", "tracking.enabled=false"]
    layout = cli_stages(tmp_path, sets, ("prepare",))
    capsys.readouterr()
    assert (
        main(["train", "--params", str(PARAMS), "--out", str(tmp_path), *[a for s in [*sets, "mixture.parts=3"] for a in ("-S", s)]]) == 1
    )
    err = capsys.readouterr().err
    assert 'mixture.json was made under other settings (mixture.parts: "auto" then, 3 now): run `gan prepare`' in err
    assert not layout.models.exists() and not layout.part(0).generator.exists()
    cli_stages(tmp_path, [*sets, "mixture.parts=3"], ("prepare", "train"))
    assert json.loads(layout.mixture.read_text())["parts"][2]["index"] == 2 and not layout.part(3).generator.exists()
    # fewer steps than the parts trained: the setting that sets a part's steps is named, not train.steps
    fewer = [*sets, "mixture.parts=3", "mixture.steps=1"]
    assert main(["train", "--params", str(PARAMS), "--out", str(tmp_path), *[a for s in fewer for a in ("-S", s)]]) == 1
    assert "is at step 2, beyond mixture.steps=1; set mixture.steps >= 2 to continue" in capsys.readouterr().err


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_samples_follow_the_part_sizes_and_every_mode_is_reached(cli_mixture):
    layout = cli_mixture
    manifest = json.loads(layout.mixture.read_text())
    weights = [p["weight"] for p in manifest["parts"]]
    assert sum(weights) == pytest.approx(1.0)
    saved = torch.load(layout.samples_file, weights_only=True)
    samples = saved["x"]
    assert samples.shape == (800, 2)
    # drawn from every part's generator, each recorded by its bytes (evaluate and diagnose compare them)
    from gancore.io import file_digest

    assert saved["drawn_from"] == {
        f"models/parts/part{i:02d}/generator.pt": file_digest(layout.part(i).generator) for i in range(len(manifest["parts"]))
    }
    diagnosis = json.loads(layout.diagnose_json.read_text())
    # Each part is one Gaussian: after 150 steps per part the mixture already sits on the modes...
    assert diagnosis["modes_covered"] == 8 and diagnosis["high_quality_fraction"] > 0.9
    assert diagnosis["mode_kl"] < 0.05
    # ...but its parts are still narrower than their Gaussians (measured: dispersion 0.77, coverage
    # 0.62 against 0.985 for training examples), which is collapse inside the modes, not healthy.
    assert diagnosis["verdict"] in ("healthy", "intra_mode_collapse")
    if diagnosis["verdict"] == "intra_mode_collapse":
        narrow = diagnosis["dispersion_ratio"] < 0.9
        covers_less = diagnosis["evaluate_coverage"] < 0.8 * diagnosis["evaluate_coverage_faithful"]
        assert narrow or covers_less
    assert "mixture" not in [r["name"] for r in diagnosis["remedy_settings"]]  # already one


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_the_mixture_s_log_carries_its_own_monitor_figures(cli_mixture):
    """The parts' monitors see one mode each; the mixture's log (and so its MLflow run) holds the
    monitor's figures for the mixture's own samples, and its progress pictures."""
    from gancore import trainlog

    rows = {int(r["step"]): r for r in trainlog.read(cli_mixture.train_log)}
    assert rows[150]["monitor/modes_covered"] == 8 and rows[150]["monitor/high_quality_fraction"] > 0.9
    assert rows[75]["monitor/modes_covered"] > 1
    part_rows = {int(r["step"]): r for r in trainlog.read(cli_mixture.part(0).train_log)}
    assert part_rows[150]["monitor/modes_covered"] == 1  # what the parent showed before
    assert (cli_mixture.progress / "step_000150.png").stat().st_size > 500


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_the_mixture_is_one_generator_that_picks_parts_by_weight(cli_mixture):
    module, record = load_mixture_generator(cli_mixture)
    assert isinstance(module, MixtureGenerator) and record["parts"] == 8
    z = torch.randn(20000, record["latent_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = module(z)
    centers = torch.tensor(json.loads(cli_mixture.prepared_meta.read_text())["modes"]["centers"]).float()
    shares = torch.bincount(torch.cdist(x, centers).argmin(dim=1), minlength=8).double() / len(x)
    manifest = json.loads(cli_mixture.mixture.read_text())
    # Parts are picked with probability = weight: binomial s.d. of a share <= sqrt(.25/20000) = 0.0035.
    expected = torch.zeros(8, dtype=torch.float64)
    shifts = torch.tensor([p["shift"] for p in manifest["parts"]]).float()
    for part, mode in zip(manifest["parts"], torch.cdist(shifts, centers).argmin(dim=1).tolist()):
        expected[mode] += part["weight"]
    assert torch.allclose(shares, expected, atol=5 * 0.0035)


@pytest.mark.xdist_group("mixture-cli")  # one module fixture for all of them, not one per worker
def test_a_part_too_light_for_one_sample_gets_none(cli_mixture, tmp_path):
    """Largest remainders give a part of weight under 1/n no sample; its empty draw is skipped
    (it was a 1-D empty tensor that the part's shift could not broadcast with)."""
    import shutil

    from gancore.config import load_params
    from gancore.sampling import draw_samples

    layout = Layout(tmp_path / "run")
    shutil.copytree(cli_mixture.root, layout.root)
    manifest = json.loads(layout.mixture.read_text())
    manifest["parts"][0]["weight"] = 1e-6
    layout.mixture.write_text(json.dumps(manifest))
    x, record = draw_samples(load_params(PARAMS, MIXTURE), layout, torch.device("cpu"))
    assert x.shape == (800, 2) and record["mixture_counts"][0] == 0 and sum(record["mixture_counts"]) == 800


def test_mean_log_averages_every_step_a_finished_part_as_it_ended():
    """The rows outside every cluster train longer than the clusters' parts: past a part's last
    step, its last row stands for it."""
    logs = [[{"step": 1, "loss_d": 1.0}, {"step": 2, "loss_d": 3.0}], [{"step": 1, "loss_d": 2.0}]]
    assert mean_log(logs) == [{"step": 1, "loss_d": 1.5}, {"step": 2, "loss_d": 2.5}]
    # a step before a part's first row has no mixture yet
    assert mean_log([[{"step": 2, "loss_d": 1.0}], [{"step": 1, "loss_d": 2.0}]]) == [{"step": 2, "loss_d": 1.5}]


def test_gan_mixture_flow_trains_parts_in_parallel_under_one_parent_run(prefect_harness, project):
    from gancore_flows.mixture import gan_mixture

    state = gan_mixture(return_state=True, params_file=str(project / "params.yaml"), sets=["mixture.steps=60", "train.monitor_every=30"])
    assert state.is_completed(), state
    result = state.result()
    parent = MlflowClient().get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["mixture.parts"] == "8"
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        output_format="list",
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    assert sorted(c.data.tags["mixture.part"] for c in children) == [str(i) for i in range(8)]
    assert all(c.info.status == "FINISHED" and c.data.metrics["weight"] > 0 for c in children)
    assert len(MlflowClient().get_metric_history(children[0].info.run_id, "train/loss_d")) > 0
    # The parent's monitor curve is the mixture's own (its parts each cover one mode of eight).
    parent_modes = MlflowClient().get_metric_history(parent.info.run_id, "monitor/modes_covered")
    child_modes = MlflowClient().get_metric_history(children[0].info.run_id, "monitor/modes_covered")
    assert [m.step for m in parent_modes] == [30, 60] and max(m.value for m in parent_modes) > 1
    assert all(m.value <= 1 for m in child_modes)
    # The mixture is registered as one model, and serves through MLflow's generic interface.
    version = parent.data.tags["model.version"]
    predicted = mlflow.pyfunc.load_model(f"models:/gancore-ring8-mlp/{version}").predict(torch.randn(5, 16).numpy())
    assert predicted.shape == (5, 2)
    assert result["diagnose"]["modes_total"] == 8


def test_class_labels_are_never_the_default_split():
    """Class labels are the modes the mode count scores: a default split by labels handed the
    metric its answer (MNIST's 10 parts, Stacked MNIST's 1,000). Images are one part under auto,
    k-means when a count is asked for; labels only when asked for, and then with no count."""
    from gancore.config import validate
    from gancore.data.prepared import PreparedData
    from gancore.diagnostics.remedies import plan
    from gancore.errors import ParamsError
    from gancore.partition import partition_method
    from helpers import image_meta

    images = torch.zeros(20, 1, 28, 28, dtype=torch.uint8)
    labelled = PreparedData(image_meta("mnist", [1, 28, 28], 20, 0, {"count": 10}), images, images[:0], torch.arange(20) % 10, None)

    def method(**mixture) -> str:
        return partition_method(validate({"data": {"name": "mnist"}, "mixture": mixture}, check_plugins=False), labelled)

    assert method() == "none"
    assert method(parts=3) == "kmeans"
    assert method(partition="labels") == "labels"
    with pytest.raises(ParamsError, match="labels make one part per class"):
        validate({"data": {"name": "mnist"}, "mixture": {"partition": "labels", "parts": 3}}, check_plugins=False)
    # the mixture remedy of a collapsed image GAN splits it by k-means, not into one part
    remedy = next(r for r in plan(["partial_collapse"], "non_saturating", None, {"kind": "image"}) if r.name == "mixture")
    assert remedy.sets == ("mixture.enabled=true", "mixture.partition=kmeans")


def test_parts_too_small_for_a_batch_of_two_are_refused_before_any_trains():
    """A one-example cluster (an outlier) trained with batch 1, where a batch-normalised G fails
    ("Expected more than 1 value per channel"), after the parts before it had trained."""
    from gancore.config import validate
    from gancore.errors import ParamsError
    from gancore.mixture import check_part_sizes

    parts = [{"index": 0, "description": "cluster 0", "count": 500}, {"index": 1, "description": "cluster 1", "count": 3}]
    check_part_sizes(validate({}, check_plugins=False), parts)
    with pytest.raises(ParamsError, match=r"part 1 \(cluster 1: 3\) has fewer examples than a batch of 2 x model.pack=2"):
        check_part_sizes(validate({"model": {"pack": 2}}, check_plugins=False), parts)
    with pytest.raises(ParamsError, match=r"part 1 \(cluster 1: 1\)"):
        check_part_sizes(validate({}, check_plugins=False), [parts[0], {**parts[1], "count": 1}])


def test_a_part_s_monitor_judges_it_on_its_own_modes(cli_mixture):
    """Each part's monitor scored it against all of ring8's centres: a part that learned its one
    mode covered "1 of 8" against 8 expected, was partial_collapse, and on_collapse=stop halted
    every part at its first check (found by a review). A part is judged on the centres its data
    lie at: its own training points, a faithful sample of it, are healthy, 1 mode of 1 expected."""
    from gancore.data.prepared import load_prepared
    from gancore.diagnostics.verdict import decide
    from gancore.training.monitor import CollapseMonitor

    layout = cli_mixture
    for p in json.loads(layout.mixture.read_text())["parts"]:
        part = layout.part(p["index"])
        data = load_prepared(part.prepared)
        monitor = CollapseMonitor(data, part.prepared, 2, 0, torch.device("cpu"))
        figures = monitor.score(data.train[:2500].float())
        assert (figures["modes_covered"], figures["modes_expected"], figures["mode_kl"]) == (1, 1.0, 0.0), p
        assert decide(figures)["verdict"] == "healthy", (p, decide(figures)["explanation"])
