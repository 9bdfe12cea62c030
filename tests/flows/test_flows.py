"""Prefect flows on the real stages (ring8 + mlp, tiny): gan-pipeline under the test harness, its
cached data preparation and resuming retries, a concurrent gan-sweep, typed parameters, and a real
server serving the deployments with ``prefect deployment run ... --watch`` completing."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
)

import gancore.training.loop
from gancore.config import Params, ParamsError, load_params
from gancore.dvcstore import data_version
from gancore.layout import Layout
from gancore.stages import STAGES
from gancore_flows import prefect_api
from gancore_flows.params import LossOverrides, TrainOverrides, resolve_params
from gancore_flows.pipeline import gan_pipeline
from gancore_flows.sweep import gan_sweep
from helpers import browser_page, screenshot, venv_env


def artifacts_of(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def run_flow(**kwargs):
    state = gan_pipeline(return_state=True, **kwargs)
    assert state.is_completed(), state
    return state.state_details.flow_run_id, state.result()


@pytest.fixture(scope="module")
def first_run(prefect_harness, project):
    return run_flow(params_file=str(project / "params.yaml"))


# -- parameters ------------------------------------------------------------------------------------
def test_flow_form_has_a_typed_field_for_every_key_of_params_yaml():
    schema = gan_pipeline.parameters.model_dump()
    definitions = schema["definitions"]
    for key in Params().flat():
        section, _, field = key.partition(".")
        if not field:  # seed, device: top-level fields
            assert key in schema["properties"], key
            continue
        ref = schema["properties"][section]
        name = (ref.get("$ref") or ref["allOf"][0]["$ref"]).rsplit("/", 1)[-1]
        assert field.split(".")[0] in definitions[name]["properties"], key
    assert definitions["LossOverrides"]["properties"]["name"]["anyOf"][0]["enum"][0] == "minimax"


def test_overrides_apply_on_top_of_params_yaml(project):
    base = resolve_params(project / "params.yaml")
    params = resolve_params(
        project / "params.yaml", {"train": TrainOverrides(steps=7), "loss": LossOverrides(), "seed": 3}, ["sample.n=null"]
    )
    assert (params.train.steps, params.seed, params.sample.n) == (7, 3, None)
    assert params.train.batch_size == base.train.batch_size == 128  # untouched: params.yaml's value
    with pytest.raises(ParamsError, match="loss.name"):
        resolve_params(project / "params.yaml", {"loss": {"name": "wgan"}})


def test_training_is_retried_only_for_failures_a_retry_can_fix():
    from prefect.states import Failed

    from gancore.errors import TrainingError
    from gancore_flows.pipeline import transient_failure

    assert transient_failure(None, None, Failed(data=OSError("injected: disk full")))
    # Training is deterministic: a diverged run diverges again at the same step.
    assert not transient_failure(None, None, Failed(data=TrainingError("non-finite loss_d at step 40")))
    assert not transient_failure(None, None, Failed(data=ParamsError([("train.steps", "must be > 0")])))


# -- the pipeline flow -----------------------------------------------------------------------------
def test_pipeline_flow_runs_every_stage_into_its_own_directory_and_one_mlflow_run(first_run, project):
    flow_run_id, result = first_run
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == project / "runs" and run_dir.name.startswith("mlp-ring8-")
    layout = Layout(run_dir)
    for path in (
        layout.prepared / "data.pt",
        layout.models / "generator.pt",
        layout.samples / "samples.png",
        layout.metrics / "evaluate.json",
        layout.metrics / "diagnose.json",
    ):
        assert path.is_file(), path
    assert result["evaluate"] == json.loads((layout.metrics / "evaluate.json").read_text())

    # Prepared data: versioned in the project's DVC cache under the hash DVC gives the directory.
    version = data_version(layout.prepared)
    assert result["data_version"] == version and not result["prepare_cached"]
    assert (project / ".dvc" / "cache" / "files" / "md5" / version[:2] / version[2:]).is_file()
    # ... and that version is a function of the parameters and code alone: `gan prepare` (what
    # `dvc repro` runs) gives the same one, so both orchestrators share data versions.
    elsewhere = Layout(project / "runs" / "by-hand")
    STAGES["prepare"](resolve_params(project / "params.yaml"), elsewhere)
    assert data_version(elsewhere.prepared) == version

    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["orchestrator"] == "prefect"
    assert run.data.tags["prefect.flow_run_id"] == str(flow_run_id)
    assert run.data.tags["dvc.prepared_md5"] == version
    assert run.data.params["train.steps"] == "50"
    assert run.data.metrics["fid"] == result["evaluate"]["fid"]
    assert len(MlflowClient().get_metric_history(run.info.run_id, "train/loss_d")) == 10

    artifacts = artifacts_of(flow_run_id)
    summary = artifacts["gan-pipeline-summary"].data
    assert f"Verdict: {result['diagnose']['verdict']}" in summary and "| FID |" in summary
    assert artifacts["mlflow-run"].data.startswith("[") and result["mlflow_run_id"] in artifacts["mlflow-run"].data


def test_cached_preparation_is_checked_out_and_training_retries_resume(first_run, project, monkeypatch):
    _, first = first_run
    saves = []
    real_save = gancore.training.loop.save_checkpoint

    def flaky_save(path, state):
        saves.append(state["step"])
        if len(saves) == 2:  # the checkpoint at step 50: a transient disk failure, once
            raise OSError("injected: disk full")
        real_save(path, state)

    monkeypatch.setattr(gancore.training.loop, "save_checkpoint", flaky_save)
    flow_run_id, result = run_flow(params_file=str(project / "params.yaml"), loss={"name": "hinge"})

    assert result["run_dir"] != first["run_dir"]
    assert result["prepare_cached"] and result["data_version"] == first["data_version"]
    new, old = Layout(result["run_dir"]), Layout(first["run_dir"])
    assert (new.prepared / "data.pt").read_bytes() == (old.prepared / "data.pt").read_bytes()

    # Attempt 1 saved step 25 and failed saving step 50; attempt 2 resumed from 25.
    assert saves == [25, 50, 50]
    assert result["summaries"]["train"]["resumed_from"] == 25
    assert torch.load(new.models / "generator.pt", weights_only=True)["step"] == 50
    history = MlflowClient().get_metric_history(result["mlflow_run_id"], "train/loss_d")
    assert sorted(m.step for m in history) == list(range(5, 51, 5))
    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.data.params["loss.name"] == "hinge"
    assert (run.data.tags["pipeline.stages_reused"], run.data.tags["dvc.prepared_md5"]) == ("prepare", first["data_version"])


def test_sweep_runs_members_concurrently_and_compares_them(prefect_harness, project):
    state = gan_sweep(
        return_state=True,
        archs=["mlp"],
        losses=["non_saturating", "hinge"],
        seeds=[0],
        seed_key="train.seed",  # training's seed alone, on the one data set
        params_file=str(project / "params.yaml"),
        # long enough to overlap: with 30 steps a member could end before the other's process had
        # started on a loaded 2-core machine (1.7 s apart in one CI run)
        train={"steps": 600},
    )
    assert state.is_completed(), state
    members = state.result()
    assert [(m["loss"], m["seed"]) for m in members] == [("non_saturating", 0), ("hinge", 0)]
    results = [m["result"] for m in members]
    assert len({r["run_dir"] for r in results}) == 2 and len({r["mlflow_run_id"] for r in results}) == 2
    for r in results:
        logged = MlflowClient().get_run(r["mlflow_run_id"]).data.params
        assert (logged["train.steps"], logged["train.seed"]) == ("600", "0")
    assert results[0]["data_version"] == results[1]["data_version"]

    sweep_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[sweep_id])))
    assert len(children) == 2 and all(c.state.is_completed() for c in children)
    # Concurrent: each member started before the other one ended.
    assert max(c.start_time for c in children) < min(c.end_time for c in children)

    table = artifacts_of(sweep_id)["gan-sweep-comparison"].data
    for r in results:
        assert r["mlflow_run_name"] in table
    assert "| mlp | hinge | 0 |" in table and "| mlp | non_saturating | 0 |" in table
    assert "\n| arch | loss | train.seed | verdict |" in table


# -- a real server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_deployments(url: str) -> int:
    request = urllib.request.Request(f"{url}/deployments/filter", data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return sum(d["name"] == "default" for d in json.load(response))
    except OSError:
        return 0


def check_run_form(url: str, params_file: Path, screenshot_name: str) -> None:
    """The served gan-pipeline deployment's run form in the Prefect UI (headless Chromium): typed
    sections, dropdowns of the names with params.yaml's values preselected, the values as hints."""
    from playwright.sync_api import sync_playwright

    from gancore.names import DATASETS, LOSSES
    from gancore.registry import architectures

    with urllib.request.urlopen(f"{url}/deployments/name/gan-pipeline/default", timeout=10) as response:
        deployment = json.load(response)["id"]
    ui = url.removesuffix("/api")
    with sync_playwright() as p:
        browser, page = browser_page(p)
        try:
            page.goto(f"{ui}/deployments/deployment/{deployment}/run")
            page.wait_for_selector("text=[params.yaml:", timeout=120_000)
            text = page.inner_text("body")
            for section in ("data (Optional)", "model (Optional)", "loss (Optional)", "train (Optional)", "mixture (Optional)"):
                assert section in text
            params = load_params(params_file)
            for value in (params.data.name, params.model.arch, params.loss.name, params.train.steps, params.train.batch_size):
                assert f"[params.yaml: {value}]" in text, value
            names = ((params.data.name, DATASETS), (params.loss.name, LOSSES), (params.model.arch, tuple(sorted(architectures()))))
            for value, choices in names:
                select = page.locator(f'button.p-select-button__control[modelvalue="{value}"]').first
                select.press("ArrowDown")  # opens the dropdown (a click toggles it twice here)
                options = page.locator(".p-select-option__text")
                options.first.wait_for(timeout=10_000)
                assert set(options.all_inner_texts()) >= set(choices), (value, options.all_inner_texts())
                assert page.locator(".p-select-option--selected").inner_text() == value
                if value == params.data.name:
                    screenshot(page, screenshot_name)
                select.press("Escape")
                page.wait_for_timeout(200)
        finally:
            browser.close()


@pytest.mark.timeout(900)
def test_served_deployment_runs_to_completion(project, first_run):
    """`make serve` (gancore_flows.serve starting its own server) + `prefect deployment run ... --watch`."""
    port = free_port()
    url = prefect_api.api_url(port=port)
    env = venv_env(OMP_NUM_THREADS="1")
    env.pop("PREFECT_API_URL", None)
    with open(project / "serve.log", "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "gancore_flows.serve", "--port", str(port), "--params", "params.yaml"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while served_deployments(url) < 2 or not (project / "prefect.toml").is_file():
            assert serve.poll() is None, (project / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "deployments were not served within 300 s"
            time.sleep(1)
        check_run_form(url, project / "params.yaml", "prefect-run-form")
        # params.yaml's bounds are in the deployment's schema: refused when the run is created
        refused = subprocess.run(
            ["prefect", "deployment", "run", "gan-pipeline/default", "--param", 'train={"steps": -5}'],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode != 0 and "steps" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
        # No PREFECT_API_URL: the CLI finds the server through the prefect.toml serve wrote here.
        run = subprocess.run(
            ["prefect", "deployment", "run", "gan-pipeline/default", "--watch", "--param", 'train={"steps": 20}'],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + (project / "serve.log").read_text()[-3000:]
        assert "Completed" in run.stdout + run.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
    assert not (project / "prefect.toml").exists()
    assert not prefect_api.healthy(url)  # the server serve started is gone with it

    runs = mlflow.search_runs(experiment_names=["gancore-tests"], filter_string="params.`train.steps` = '20'")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED" and row["tags.orchestrator"] == "prefect" and row["tags.prefect.deployment_id"]
