"""Beyond one machine, on the real engines started locally the way they are started for real: a
sweep on a Dask LocalCluster against a real MLflow tracking server, a sweep on a local Ray, and a
deployment run completing through a process worker of a work pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

from gancore_flows import prefect_api
from gancore_flows.sweep import gan_sweep
from helpers import free_port, venv_env, write_params

SWEEP = {"losses": ["non_saturating", "hinge"], "seeds": [0], "train": {"steps": 20, "monitor_every": 10}}


def wait_for(check, timeout: float, what: str, process: subprocess.Popen | None = None, log=None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}\n{log.read_text()[-3000:] if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.5)


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """`gan tracking-server` on a project of its own (127.0.0.1, a free port)."""
    root = tmp_path_factory.mktemp("tracked-project")
    write_params(root / "params.yaml")
    port = free_port()
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gancore.cli", "tracking-server", "--root", str(root), "--port", str(port)],
            cwd=root,
            env=venv_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: (root / ".mlflow-server").is_file(), 300, "the tracking server did not answer", process, log)
        yield url, root
    finally:
        stop(process, signal.SIGTERM)  # what a service manager sends: the MLflow server goes with it
    assert not (root / ".mlflow-server").exists()
    from gancore.tracking.server import answers

    assert not answers(url)


def test_sweep_on_a_dask_cluster_reports_to_one_api_and_logs_through_the_tracking_server(prefect_harness, tracking_server, monkeypatch):
    from distributed import LocalCluster

    url, root = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # what workers on other machines would be given
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1") as cluster:
        state = gan_sweep(
            return_state=True, runner="dask", workers=2, address=cluster.scheduler_address, params_file=str(root / "params.yaml"), **SWEEP
        )
    assert state.is_completed(), state
    members = state.result()
    results = [m["result"] for m in members]
    assert [m["loss"] for m in members] == ["non_saturating", "hinge"]

    # Both members' flow runs are children of the sweep in the sweep's own API.
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    assert len(children) == 2 and all(c.state.is_completed() for c in children)

    # Everything arrived through the server: runs, curves, metrics, artifacts, model versions.
    c = MlflowClient(tracking_uri=url, registry_uri=url)  # not a registry set earlier in this process
    for r in results:
        run = c.get_run(r["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert len(c.get_metric_history(run.info.run_id, "train/loss_d")) == 20 // 5  # train.steps / train.log_every of the test parameters
        assert run.data.metrics["fid"] == r["evaluate"]["fid"]
        assert {"metrics/evaluate.json", "metrics/diagnose.json", "samples/samples.png"} <= {
            f.path for d in ("metrics", "samples") for f in c.list_artifacts(run.info.run_id, d)
        }
    versions = c.search_model_versions("name='gancore-ring8-mlp'")
    assert {v.run_id for v in versions} >= {r["mlflow_run_id"] for r in results}
    # ... and into the server's store: the project's SQLite file and artifact folder.
    assert (root / "mlflow.db").is_file() and any((root / "mlartifacts").rglob("samples.png"))


def test_sweep_on_a_local_ray(prefect_harness, project):
    ray = pytest.importorskip("ray")
    state = gan_sweep(return_state=True, runner="ray", workers=2, params_file=str(project / "params.yaml"), **SWEEP)
    if ray.is_initialized():
        ray.shutdown()
    assert state.is_completed(), state
    members = state.result()
    assert [m["result"]["diagnose"]["verdict"] is not None for m in members] == [True, True]
    c = MlflowClient()
    assert [c.get_run(m["result"]["mlflow_run_id"]).info.status for m in members] == ["FINISHED", "FINISHED"]


def test_member_on_another_machine_fails_clearly_without_a_shared_store(tmp_path):
    from gancore.errors import GanCoreError
    from gancore_flows.runners import check_member_host, member_context

    params = write_params(tmp_path / "params.yaml")
    context = {**member_context(str(params)), "host": "elsewhere"}
    with pytest.raises(GanCoreError, match=r"SQLite file of elsewhere.*tracking server"):
        check_member_host(context)
    with pytest.raises(GanCoreError, match=r"the project is not here .*Share the project directory"):
        check_member_host({**context, "params_file": str(tmp_path / "gone" / "params.yaml")})


def deployments_on(url: str, pool: str) -> list[str]:
    request = urllib.request.Request(
        f"{url}/deployments/filter", data=json.dumps({}).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return [d["name"] for d in json.load(response) if d.get("work_pool_name") == pool]
    except OSError:
        return []


@pytest.mark.timeout(900)
def test_deployment_run_completes_through_a_process_worker(project):
    """`make worker`: a local server, the process work pool, the deployments on it and a worker;
    then `prefect deployment run 'gan-pipeline/pool' --watch`."""
    port = free_port()
    url = prefect_api.api_url(port=port)
    env = venv_env(PREFECT_HOME=str(project / "prefect-worker-home"))
    env.pop("PREFECT_API_URL", None)
    log = project / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "gancore_flows.worker", "--port", str(port), "--pool", "test-pool"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: len(deployments_on(url, "test-pool")) == 4 and "worker" in log.read_text().lower(),
            300,
            "the worker's deployments were not registered",
            worker,
            log,
        )
        run = subprocess.run(
            ["prefect", "deployment", "run", "gan-pipeline/pool", "--watch", "--param", 'train={"steps": 20}'],
            cwd=project,
            env={**env, "PREFECT_API_URL": url},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + log.read_text()[-3000:]
        assert "Completed" in run.stdout + run.stderr
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGINT)  # Ctrl-C: the worker, then the server it started
        stop(worker)
    assert not prefect_api.healthy(url)  # the server the worker command started stopped with it
