"""The processes the serve and worker commands start die with them: a Prefect server or worker
must not outlive a command that was killed, nor one interrupted twice while stopping them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gancore_flows import prefect_api

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie no parent reaps yet counts as gone: it runs nothing.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_child_started_like_the_server_dies_when_its_parent_is_killed():
    """SIGKILL gives the parent no chance to clean up; the child goes anyway (parent-death signal),
    though it runs in a session of its own, as the server does."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import subprocess, sys, time
                from gancore_flows.prefect_api import dies_with_this_process
                child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                         start_new_session=True, preexec_fn=dies_with_this_process())
                print(child.pid, flush=True)
                time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait(10)
        assert _gone_within(child, 10)
    finally:
        parent.kill()


def test_stopping_kills_at_a_second_interrupt_instead_of_abandoning_the_process():
    """A process that ignores SIGTERM is waited for; a Ctrl-C during that wait kills it, and the
    interrupt still reaches the caller."""
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
    )
    stubborn.stdout.readline()  # SIGTERM is ignored from here on
    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            prefect_api.stop_process(stubborn, timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stubborn.poll() == -signal.SIGKILL
    # Without an interrupt, SIGKILL follows the grace period.
    again = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
    )
    again.stdout.readline()
    prefect_api.stop_process(again, timeout=0.5)
    assert again.poll() == -signal.SIGKILL


def test_a_shutdown_that_swallows_the_interrupt_is_interrupted_again():
    """Prefect's serve stops on Ctrl-C by cancelling its runner's tasks and awaiting them; a task
    that swallows the cancellation held that await forever (asyncio's own handler only cancels).
    Within interrupted_again_after the first SIGINT raises and, the block still running after the
    grace, a second interrupt follows: the process stops, as serve's cleanup then can."""
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import asyncio
                from gancore_flows.prefect_api import interrupted_again_after

                async def swallows_cancellation():
                    print("ready", flush=True)
                    while True:
                        try:
                            await asyncio.sleep(3600)
                        except asyncio.CancelledError:
                            pass

                with interrupted_again_after(1.0):
                    try:
                        asyncio.run(swallows_cancellation())
                    except KeyboardInterrupt:
                        print("stopped", flush=True)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stubborn.stdout.readline().strip() == "ready"
        stubborn.send_signal(signal.SIGINT)
        assert stubborn.wait(20) == 0
        assert stubborn.stdout.read().strip() == "stopped"
    finally:
        stubborn.kill()


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().split(")")[-1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def test_ctrl_c_stops_an_in_process_sweep_at_once_and_says_so(tmp_path):
    """A Ctrl-C at the terminal (SIGINT to the foreground process group) left the members training
    to their end: the process pool's exit waited for them (minutes). The temporary server died with
    the interrupt, and the flows retried it with a page of tracebacks; a second temporary server,
    started for the pool's message thread, died too. Now the members stop, the flows are marked
    crashed, and the command says so and exits 130, leaving no process behind."""
    from helpers import venv_env, write_params

    params = write_params(tmp_path / "params.yaml", train={"steps": 1_000_000, "monitor_every": None})
    command = [sys.executable, "-m", "gancore_flows.sweep", "--params", str(params), "--workers", "2"]
    log = tmp_path / "sweep.log"
    with log.open("wb") as out:
        sweep = subprocess.Popen(command, cwd=tmp_path, env=venv_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(list(tmp_path.glob("runs/*/checkpoints/last.pt"))) < 2:  # both members are training
            assert sweep.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(sweep.pid, signal.SIGINT)
        assert sweep.wait(60) == 130
        output = log.read_text()
        assert "gan-sweep: interrupted; a run resumes from its checkpoints" in output
        assert "Traceback" not in output and "Starting temporary server" not in output
        assert "Crashed('Execution was aborted by a termination signal.')" in output  # the members, recorded as such
        assert _gone_within_group(sweep.pid, 15)
        # ... and in MLflow, as stopped, not failed (they were FAILED, beside real failures)
        from mlflow import MlflowClient

        members = [json.loads(f.read_text())["run_id"] for f in tmp_path.glob("runs/*/.mlflow_run.json")]
        client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        assert len(members) == 2 and [client.get_run(r).info.status for r in members] == ["KILLED", "KILLED"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sweep.pid, signal.SIGKILL)


def _gone_within_group(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _group(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
