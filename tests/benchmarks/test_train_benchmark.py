"""The benchmarks run end to end (tiny settings) and print their side-by-side tables."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from helpers import REPO


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """The benchmark as a user runs it: its own interpreter, one intra-op thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True, timeout=300, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_train_throughput_runs():
    proc = run_benchmark("train_throughput.py", "--tiny", "--device", "cpu")
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("arch"))
    assert lines[header].split()[-1] == "ratio"
    rows = [line.split() for line in lines[header + 2 :] if line.strip()]
    assert [tuple(r[:3]) for r in rows] == [("dcgan", "3x32x32", "width=4"), ("dcgan", "3x64x64", "width=4"), ("mlp", "2", "hidden=16")]
    for row in rows:
        ours, base, ratio = (float(v) for v in row[3:6])
        assert all(math.isfinite(v) and v > 0 for v in (ours, base, ratio)), row
        assert math.isclose(ratio, ours / base, rel_tol=0.01, abs_tol=0.006), row  # printed to 2 decimals


def test_train_throughput_prices_each_augmentation():
    proc = run_benchmark("train_throughput.py", "--tiny", "--device", "cpu", "--augment", "--archs", "dcgan,mlp", "--sizes", "32")
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("arch"))
    rows = [line.split() for line in lines[header + 1 :] if line.strip()]
    assert [r[:2] for r in rows] == [["dcgan", "3x32x32"], ["mlp", "2"]]
    settings = [name for name in lines[header].split()[2:] if name != "samples/s"][: lines[header].count("samples/s")]
    assert settings == ["none", "fixed", "adaptive", "held_out", "geometric", "blit", "ada_color"]
    end = 2 + len(settings)
    for row in rows:
        # none, fixed, adaptive, held_out; geometric, blit and ada_color: images only ("-" for the 2D points)
        images = row[1] != "2"
        assert all((v != "-") == images for v in row[6:end]), row
        speeds = [float(v) for v in row[2:end] if v != "-"]
        assert all(math.isfinite(v) and v > 0 for v in speeds), row
        costs = dict(zip(row[end::2], row[end + 1 :: 2]))
        assert set(costs) == {"fixed", "adaptive", "held_out", *(["geometric", "blit", "ada_color"] if images else [])}
        assert all(math.isclose(float(costs[n].strip("x,")), speeds[0] / v, rel_tol=0.01, abs_tol=0.006) for n, v in zip(costs, speeds[1:]))


def test_train_throughput_prices_compiling():
    """train.compile: true against eager, the compilation's seconds apart (on the CPU here: the
    same torch.compile path a GPU takes, only its kernels differ)."""
    proc = run_benchmark("train_throughput.py", "--tiny", "--device", "cpu", "--compile", "--archs", "mlp")
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("arch"))
    assert lines[header].split()[-2:] == ["compile", "s"]
    (row,) = [line.split() for line in lines[header + 1 :] if line.strip()]
    assert row[:2] == ["mlp", "2"]
    eager, compiled, ratio, seconds = (float(v) for v in row[2:6])
    assert eager > 0 and compiled > 0 and seconds > 0
    assert math.isclose(ratio, compiled / eager, rel_tol=0.01, abs_tol=0.006)


def test_train_throughput_prices_the_memory_layout():
    """channels_last (train.channels_last: auto) against contiguous, image architectures only."""
    proc = run_benchmark("train_throughput.py", "--tiny", "--device", "cpu", "--layout", "--archs", "dcgan,mlp", "--sizes", "32")
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("arch"))
    assert lines[header].split()[2:] == ["contiguous", "samples/s", "channels_last", "samples/s", "ratio"]
    (row,) = [line.split() for line in lines[header + 1 :] if line.strip()]
    assert row[:2] == ["dcgan", "3x32x32"]
    plain, last, ratio = (float(v) for v in row[2:5])
    assert plain > 0 and last > 0
    assert math.isclose(ratio, last / plain, rel_tol=0.01, abs_tol=0.006)


def test_monitor_overhead_runs():
    proc = run_benchmark("monitor_overhead.py", "--tiny")
    header, row = proc.stdout.splitlines()[-2:]
    assert header.split() == ["run", "off_s", "on_s", "overhead"]
    off, on, overhead = float(row.split()[-3]), float(row.split()[-2]), float(row.split()[-1].rstrip("%"))
    assert off > 0 and on > 0
    # Times printed to 2 decimals (+-0.005 each), the overhead to 1 (+-0.05).
    rounding = 100 * (0.005 / off + 0.005 * on / off**2) + 0.05
    assert overhead == pytest.approx(100 * (on / off - 1), abs=rounding)
