"""MLflow tracking: one run per pipeline execution, handed from stage to stage, holding everything.

One real tiny pipeline (ring8 + mlp, 50 steps) runs stage by stage in file-handed mode, as
``gan <stage>`` runs them; the run's contents are then read back through mlflow.search_runs and
the client and compared with the files the stages wrote.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from gancore import tracking, trainlog
from gancore.config import load_params
from gancore.device import software
from gancore.dvcstore import data_version
from gancore.errors import GanCoreError
from gancore.layout import Layout
from gancore.ranking import headline
from gancore.registry import architectures
from gancore.stages import STAGE_ORDER, run_stage
from helpers import write_params

EXPERIMENT = "gancore-tests"

# One tiny_run (a session fixture, conftest.py) serves the package: keep its tests on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("tracking")


def client() -> MlflowClient:
    return MlflowClient()


def artifact_paths(run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client().list_artifacts(run_id, path):
        out |= artifact_paths(run_id, item.path) if item.is_dir else {item.path}
    return out


def model_versions(params, run_id: str) -> list:
    name = tracking.registered_model_name(params)
    return [v for v in client().search_model_versions(f"name='{name}'") if v.run_id == run_id]


def test_one_run_holds_params_tags_curves_metrics_artifacts_and_model(tiny_run):
    params, layout, run_id = tiny_run
    frame = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=f"attributes.run_id = '{run_id}'")
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["status"] == "FINISHED"
    assert re.fullmatch(r"mlp-ring8-[0-9a-f]{4}", row["tags.mlflow.runName"])
    assert row["params.data.name"] == "ring8" and row["params.model.arch"] == "mlp" and row["params.train.steps"] == "50"

    run = client().get_run(run_id)
    assert run.data.params == {k: tracking.param_value(v) for k, v in params.flat().items()}
    tags = run.data.tags
    reg = architectures()["mlp"]
    assert tags["orchestrator"] == "cli"
    assert (tags["plugin.arch"], tags["plugin.distribution"], tags["plugin.version"]) == ("mlp", reg.distribution, reg.version)
    assert tags["dvc.prepared_md5"] == data_version(layout.prepared)
    assert tags["dvc.prepared_md5"].endswith(".dir")
    assert tags["pipeline.stages_run"] == ",".join(STAGE_ORDER) and tags["pipeline.stages_reused"] == ""
    assert tags["verdict"] == json.loads((layout.metrics / "diagnose.json").read_text())["verdict"]
    # The install the run trained and was scored on: a rerun reproduces its bits only there.
    assert tags["train.software"] == tags["provenance.software"] == software("cpu")

    # Curves: one point per row of the training log, at its step, with its exact value.
    rows = trainlog.read(layout.train_log)
    assert [r["step"] for r in rows] == list(range(5, 51, 5))
    for column in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_g"):
        history = sorted((m.step, m.value) for m in client().get_metric_history(run_id, f"train/{column}"))
        assert history == [(r["step"], r[column]) for r in rows], column

    # The monitor's figures are curves too, at its checks (every 25 steps).
    monitor = sorted(m.step for m in client().get_metric_history(run_id, "monitor/high_quality_fraction"))
    assert monitor == [25, 50]

    # The figures a paper prints, unprefixed and exact (MLflow stores doubles); everything else
    # only in the JSON artifacts, so the metrics tab opens with the curves.
    evaluate = json.loads((layout.metrics / "evaluate.json").read_text())
    diagnose = json.loads((layout.metrics / "diagnose.json").read_text())
    expected = headline(evaluate, diagnose)
    assert {"is_mean", "fid", "js_divergence", "modes_covered", "high_quality_fraction"} <= set(expected)
    assert ("mode_kl" in expected) == (diagnose["mode_kl"] is not None)
    for key, value in expected.items():
        assert run.data.metrics[key] == value, key
    prefixes = {k.split("/")[0] for k in run.data.metrics if "/" in k}
    assert prefixes == {"train", "monitor"}
    assert set(run.data.metrics) - {k for k in run.data.metrics if "/" in k} == {*expected, "classifier_test_accuracy"}

    # The diagnosis is the run's description; the pictures are images (a series for the progress).
    description = tags["mlflow.note.content"]
    assert f"**Verdict: {diagnose['verdict']}**" in description and diagnose["explanation"] in description
    assert all(remedy in description for remedy in diagnose["remedies"])
    assert tags["mlflow.loggedImages"].lower() == "true"
    images = {p for p in artifact_paths(run_id) if p.startswith("images/")}
    assert {p.split("+")[0] for p in images} == {"images/samples", "images/progress"}
    assert sorted({int(p.split("+step+")[1].split("+")[0]) for p in images if p.startswith("images/progress")}) == [25, 50]

    assert {
        "samples/samples.png",
        "plots/ndb.png",
        "plots/mode_histogram.png",
        "plots/dynamics.png",
        "diagnosis/diagnosis.md",
        "metrics/evaluate.json",
        "metrics/diagnose.json",
        "metrics/train_log.csv",
    } <= artifact_paths(run_id)


def test_registered_generator_maps_latent_vectors_to_samples(tiny_run):
    params, layout, run_id = tiny_run
    (version,) = model_versions(params, run_id)
    uri = f"models:/{version.name}/{version.version}"
    logged = client().get_logged_model(version.source.removeprefix("models:/"))
    assert logged.experiment_id == client().get_run(run_id).info.experiment_id  # not "Default"
    signature = mlflow.models.get_model_info(uri).signature
    assert signature.inputs.inputs[0].shape == (-1, params.model.latent_dim)
    assert signature.outputs.inputs[0].shape == (-1, 2)

    from gancore.modelio import load_generator

    logged = mlflow.pytorch.load_model(uri)
    z = torch.randn(7, params.model.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = load_generator(layout.models / "generator.pt")(z)
        assert torch.equal(logged.eval()(z), expected)
    # MLflow's generic interface (what `mlflow models serve` and batch inference use): an ndarray
    # of latent vectors in, samples out.
    predicted = mlflow.pyfunc.load_model(uri).predict(z.numpy())
    assert predicted.shape == (7, 2) and torch.allclose(torch.as_tensor(predicted), expected)


def test_stages_skipped_by_dvc_are_backfilled_and_the_run_is_handed_on(tiny_run):
    """A new execution that starts at evaluate (DVC skipped the unchanged upstream stages)."""
    params, layout, first = tiny_run
    run_stage("evaluate", params, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    second = tracking.current_run_id(layout)
    assert second != first
    run = client().get_run(second)
    assert run.info.status == "RUNNING"  # handed on: diagnose has not run yet
    assert run.data.tags["pipeline.stages_reused"] == "prepare,train,sample"
    assert run.data.tags["dvc.prepared_md5"] == client().get_run(first).data.tags["dvc.prepared_md5"]
    assert len(client().get_metric_history(second, "train/loss_d")) == 10
    assert len(model_versions(params, second)) == 1

    run_stage("diagnose", params, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    assert tracking.current_run_id(layout) == second
    run = client().get_run(second)
    assert run.info.status == "FINISHED"
    assert run.data.tags["pipeline.stages_run"] == "evaluate,diagnose"
    assert client().get_run(first).info.status == "FINISHED"


def test_a_stage_dvc_skipped_in_the_middle_is_backfilled_too(tiny_run):
    """sample and diagnose ran, evaluate between them was skipped (unchanged): the run that
    continued at diagnose had no FID and no provenance card, and called itself complete."""
    params, layout, _ = tiny_run
    run_stage("sample", params, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    run_id = tracking.current_run_id(layout)
    run_stage("diagnose", params, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    assert tracking.current_run_id(layout) == run_id
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["pipeline.stages_run"] == "sample,diagnose"
    assert run.data.tags["pipeline.stages_reused"] == "prepare,train,evaluate"
    evaluate = json.loads((layout.metrics / "evaluate.json").read_text())
    assert run.data.metrics["fid"] == evaluate["fid"] and "provenance.feature_network" in run.data.tags


def test_repeated_stage_opens_a_new_run_and_the_abandoned_one_is_killed(tiny_run):
    params, layout, _ = tiny_run
    run_stage("sample", params, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    abandoned = tracking.current_run_id(layout)
    run_stage("sample", params, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    fresh = tracking.current_run_id(layout)
    assert fresh != abandoned
    assert client().get_run(abandoned).info.status == "KILLED"
    assert client().get_run(fresh).info.status == "RUNNING"


def test_failing_stage_marks_its_run_failed(tiny_run, monkeypatch):
    params, layout, _ = tiny_run
    before = (layout.metrics / "evaluate.json").read_bytes()
    monkeypatch.setenv("GANCORE_FAULTS", "write:evaluate.json=raise")  # a disk failing as evaluate writes
    with pytest.raises(GanCoreError, match="could not write .*evaluate.json"):
        run_stage("evaluate", params, layout, tracking.FileHandedRecorder(str(layout.root), "cli"))
    failed = client().get_run(tracking.current_run_id(layout))
    assert failed.info.status == "FAILED"
    assert failed.data.params["data.name"] == "ring8"
    assert (layout.metrics / "evaluate.json").read_bytes() == before


def test_tracking_disabled_records_nothing(tiny_run):
    params, layout, _ = tiny_run
    quiet = params.model_copy(update={"tracking": params.tracking.model_copy(update={"enabled": False})})
    state = layout.run_file.read_text()
    count = len(mlflow.search_runs(experiment_names=[EXPERIMENT]))
    summary = run_stage("sample", quiet, layout, tracking.recorder_for(quiet, layout.root, "cli"))
    assert summary["n"] == 500
    assert len(mlflow.search_runs(experiment_names=[EXPERIMENT])) == count
    assert layout.run_file.read_text() == state


def test_orchestrator_is_dvc_inside_a_dvc_stage(monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert tracking.detect_orchestrator() == "cli"
    monkeypatch.setenv("DVC_STAGE", "train")
    assert tracking.detect_orchestrator() == "dvc"


def test_default_store_is_sqlite_beside_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{(tmp_path / 'repo').resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5555")
    assert tracking.tracking_uri(tmp_path) == "http://127.0.0.1:5555"


def test_core_imports_no_orchestrator_and_no_torch():
    code = (
        "import sys, gancore, gancore.cli, gancore.stages, gancore.tracking; "
        "print([m for m in ('mlflow', 'prefect', 'dvc', 'dvc_data', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.timeout(600)
def test_registered_model_serves_latent_vectors_over_http(tiny_run, tmp_path):
    """`mlflow models serve -m models:/<name>@best --env-manager local` on 127.0.0.1 answers a POST
    of latent vectors with samples."""
    import os
    import signal
    import time
    import urllib.request

    from helpers import free_port, venv_env

    params, layout, run_id = tiny_run
    (version,) = model_versions(params, run_id)
    client().set_registered_model_alias(version.name, "serve-test", version.version)
    port = free_port()
    env = venv_env(MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"])
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                f"models:/{version.name}@serve-test",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        z = torch.randn(4, params.model.latent_dim, generator=torch.Generator().manual_seed(9))
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": z.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            predictions = torch.tensor(json.load(r)["predictions"])
        from gancore.modelio import load_generator

        with torch.no_grad():
            expected = load_generator(layout.models / "generator.pt")(z)
        assert predictions.shape == (4, 2) and torch.allclose(predictions, expected, atol=1e-6)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)


def test_the_registered_model_is_the_generator_that_was_sampled(tmp_path):
    """With sample.generator=best the samples, the scores and @best describe the generator
    train.keep_best kept; the run registered the last one, and pictured the samples at
    train.steps."""
    from gancore.modelio import load_generator, read_model_file

    root = tmp_path / "best"
    root.mkdir()
    params = load_params(
        write_params(
            root / "params.yaml", train={"keep_best": "mode_kl"}, sample={"generator": "best"}, tracking={"experiment": EXPERIMENT}
        )
    )
    layout = Layout(root)
    recorder = tracking.FileHandedRecorder(str(root), "cli")
    for stage in ("prepare", "train", "sample"):
        run_stage(stage, params, layout, recorder)
    best = layout.best_models / "generator.pt"
    step = read_model_file(best)["step"]
    # the check needs the kept generator and the last one apart: on this seed they are
    assert step < params.train.steps
    run_id = tracking.current_run_id(layout)
    (version,) = model_versions(params, run_id)
    assert client().get_run(run_id).data.tags["model.step"] == str(step)
    z = torch.randn(5, params.model.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        registered = mlflow.pytorch.load_model(f"models:/{version.name}/{version.version}").eval()(z)
        assert torch.equal(registered, load_generator(best)(z))
    pictures = {p for p in artifact_paths(run_id) if p.startswith("images/samples")}
    assert pictures and all(f"+step+{step}+" in p for p in pictures)
