"""Progress shows as bars on a terminal and as plain lines elsewhere (Prefect logs, CI, DVC): the
domain classifier's in `gan prepare`, training's in `gan train`, with the training plan."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from helpers import REPO

BIN = Path(sys.executable).parent


def run_gan(args: list[str], cwd: Path, tty: bool) -> str:
    """Run ``gan`` with stderr on a pseudo-terminal (tty) or a pipe; return what stderr got."""
    # Its own classifier cache: a classifier cached by another test (or the other parameter, on
    # the other xdist worker) would skip the training whose bar this test looks for.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GANCORE_CACHE_DIR": str(cwd / "cache")}
    env.pop("GANCORE_PROGRESS", None)
    if not tty:
        done = subprocess.run([str(BIN / "gan"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    # A terminal has a size (tqdm sizes its bar to it); a bare pseudo-terminal has 0 x 0.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([str(BIN / "gan"), *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the child exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
def test_bars_on_a_terminal_lines_elsewhere(tmp_path, tty):
    if not (Path(os.environ.get("GANCORE_DATASETS_DIR", "")) / "MNIST").exists():
        pytest.skip("no MNIST mirror (GANCORE_DATASETS_DIR)")
    sets = ["-S", "data.name=mnist", "-S", "model.arch=dcgan", "-S", "model.options.width=4", "-S", "data.n_train=256"]
    sets += ["-S", "data.n_test=128", "-S", "data.classifier_epochs=1", "-S", "mixture.enabled=false", "-S", "train.steps=5"]
    sets += ["-S", "train.batch_size=32", "-S", "train.monitor_every=null", "-S", "tracking.enabled=false"]
    common = ["--params", str(REPO / "params.yaml"), "--out", str(tmp_path), *sets]
    prepared = run_gan(["prepare", *common], tmp_path, tty)
    trained = run_gan(["train", *common], tmp_path, tty)
    assert "epoch=1/1" in prepared  # the postfix: epoch, loss, accuracy (bar or line)
    assert "[gancore] plan: one GAN, 5 steps, batch 32, dcgan on cpu" in trained
    # A bar redraws itself with carriage returns; off a terminal each report is a line of its own.
    assert ("\r" in trained) is tty
    if tty:
        assert "domain classifier" in prepared and "train:" in trained and "step" in trained
    else:
        assert "[progress] domain classifier: batch" in prepared
        assert "[progress] train: step 5/5 (100%)" in trained
