"""The project's tracking server stopped: a stage that opened its run through it says so at once and
keeps its results for a rerun, which records them in the same run once the server is back; runs
without the server log their files to the folder the server kept them in; and the server starts
again on its port at once. Before: MLflow's client retried for minutes, then a page of traceback
with the run left RUNNING; every later run without the server failed to log a file
(``mlflow-artifacts:/`` resolves through a server only); and a restarted server was refused its
port for a minute (the connections of the stopped one, in TIME_WAIT)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from gancore.config import load_params
from gancore.data.prepare import prepare_data
from gancore.layout import Layout
from gancore.tracking.server import _port_taken
from gancore.tracking.store import answers, serve_artifacts_locally
from helpers import free_port, venv_env, write_params


def test_a_port_whose_last_server_just_stopped_is_free():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as peer:
            accepted, _ = listener.accept()
            accepted.close()  # the server side closes first: its port holds a TIME_WAIT connection
            peer.recv(1)
    assert _port_taken(f"http://127.0.0.1:{port}") is None
    with socket.create_server(("127.0.0.1", port)):  # a listener does hold it
        assert _port_taken(f"http://127.0.0.1:{port}")


def _server(root, port):
    return subprocess.Popen(
        [sys.executable, "-m", "gancore.cli", "tracking-server", "--root", str(root), "--port", str(port)],
        cwd=root,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _env():
    env = venv_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, and its server while it runs
    return env


def _up(root, url, process):
    deadline = time.monotonic() + 300
    while not ((root / ".mlflow-server").is_file() and answers(url)):
        assert process.poll() is None and time.monotonic() < deadline, "the tracking server did not start"
        time.sleep(0.3)


def _stop(process):
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0


def _gan(root, *argv):
    return subprocess.run([sys.executable, "-m", "gancore.cli", *argv], cwd=root, env=_env(), capture_output=True, text=True, timeout=300)


def test_a_stage_whose_tracking_server_stopped_says_so_and_its_rerun_records_it_in_the_same_run(tmp_path):
    root = tmp_path
    params = load_params(write_params(root / "params.yaml", train={"steps": 200, "log_every": 50, "checkpoint_every": 50}))
    (root / ".dvc").mkdir()
    prepare_data(params, Layout(root))  # untracked: train opens the run, with prepare in it
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _server(root, port)
    try:
        _up(root, url, server)
        training = subprocess.Popen(
            [sys.executable, "-m", "gancore.cli", "train"],
            cwd=root,
            env=_env(),
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        while not (root / "checkpoints" / "last.pt").is_file():  # training, its run opened through the server
            assert training.poll() is None
            time.sleep(0.05)
        training.send_signal(signal.SIGSTOP)  # held while the server stops: it may not finish first
        _stop(server)
        training.send_signal(signal.SIGCONT)
        started = time.monotonic()
        error = training.communicate(timeout=300)[1]
        assert training.returncode == 1 and time.monotonic() - started < 120, error
        assert f"the tracking server at {url} stopped answering before train was recorded" in error
        assert "Traceback" not in error
        run_id = json.loads((root / ".mlflow_run.json").read_text())["run_id"]

        # Back on its port at once, and the rerun records train in the same run.
        server = _server(root, port)
        _up(root, url, server)
        rerun = _gan(root, "train")
        assert rerun.returncode == 0, rerun.stderr
        assert json.loads((root / ".mlflow_run.json").read_text())["run_id"] == run_id
        run = MlflowClient(url).get_run(run_id)
        assert run.info.status == "RUNNING" and run.data.tags["pipeline.stages_run"] == "train"
        assert run.data.tags["pipeline.stages_reused"] == "prepare" and "train/loss_d" in run.data.metrics
        _stop(server)
    finally:  # SIGINT, which takes its MLflow server with it (a SIGKILL would leave that behind)
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()


def test_a_run_of_an_experiment_the_server_created_logs_its_files_without_the_server(tmp_path):
    """The server gave the experiment ``mlflow-artifacts:/<id>`` (files it serves from the
    project's mlartifacts/); a run on the project's store directly puts its files there too."""
    serve_artifacts_locally()  # what the project's client does as it opens its store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    experiment = c.create_experiment("made-by-the-server", artifact_location="mlflow-artifacts:/7")
    run = c.create_run(experiment)
    (tmp_path / "evaluate.json").write_text("{}")
    c.log_artifact(run.info.run_id, str(tmp_path / "evaluate.json"), "metrics")
    assert (tmp_path / "mlartifacts" / "7" / run.info.run_id / "artifacts" / "metrics" / "evaluate.json").is_file()
    assert [f.path for f in c.list_artifacts(run.info.run_id, "metrics")] == ["metrics/evaluate.json"]


def test_a_run_stopped_from_outside_is_killed_and_a_failing_one_failed():
    """Members of a sweep stopped by Ctrl-C (the pool terminates them) were recorded FAILED."""
    import asyncio

    from prefect.exceptions import TerminationSignal

    from gancore.tracking import ended_status

    for stopped in (KeyboardInterrupt(), TerminationSignal(signal.SIGTERM), asyncio.CancelledError()):
        assert ended_status(stopped) == "KILLED", stopped
    for failed in (ValueError("nan loss"), RuntimeError(), SystemExit(1)):
        assert ended_status(failed) == "FAILED", failed


def test_a_flow_whose_tracking_server_is_gone_is_told_at_once_and_does_not_wait_to_end_its_run(tmp_path):
    """A flow's process outlives a server stopped meanwhile: each stage's record, then the run's
    end, waited for MLflow's minutes of retries (and train's two retries each time)."""
    from gancore.errors import GanCoreError
    from gancore.tracking import OwnedRunRecorder, PipelineRun

    gone = f"http://127.0.0.1:{free_port()}"  # where the server was
    run = PipelineRun(MlflowClient(gone), "0" * 32, "1", tmp_path)
    recorder = OwnedRunRecorder(run.run_id, str(tmp_path))
    recorder._run = run  # the run it opened while the server was up
    started = time.monotonic()
    with pytest.raises(GanCoreError) as refused:  # which the flow's train task does not retry
        recorder.finish("train", load_params(write_params(tmp_path / "params.yaml")), Layout(tmp_path), {})
    assert f"the tracking server at {gone} stopped answering before train was recorded" in str(refused.value)
    assert "run the flow again into the same --out" in str(refused.value)
    run.end("KILLED")  # returns: the next run in the folder marks it KILLED
    assert time.monotonic() - started < 10
