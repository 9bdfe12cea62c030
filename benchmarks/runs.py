"""What the quality benchmarks share: running pipeline stages in a single-threaded worker,
and the lengths a benchmark trains its runs to (seeds summarised as mean +- s.e.: gancore.report.mean_se)."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any


def run_stages(params: Any, layout: Any, stages: tuple[str, ...], billed_as: str | None = None) -> float:
    """Run ``stages`` of the pipeline on ``params`` under ``layout`` in this process, on one
    thread (benchmark workers run side by side); return the CPU seconds they took (on a GPU: the
    wall-clock seconds, the GPU's time being what the run costs there; ``billed_as``: the device
    whose clock to use instead, for stages run elsewhere than the run's training)."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ.setdefault("GANCORE_PROGRESS", "0")
    from gancore.stages import run_stage

    clock = time.perf_counter if cost_unit(billed_as or params.device) == "wall" else time.process_time
    start = clock()
    for stage in stages:
        run_stage(stage, params, layout)
    return clock() - start


# A run prepared without a domain classifier of its own, to be scored by a reference's
# (:func:`install_classifier`); the stages after prepare check the settings it was prepared with.
NO_CLASSIFIER = "data.classifier_epochs=0"


def share_raw(reference: Any, layout: Any) -> None:
    """``reference``'s raw files (downloads and what was extracted from them) in ``layout``'s raw
    folder, hard-linked where the file system allows (else copied): each run prepares its own data
    without fetching or extracting them again."""
    import shutil

    def link(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:  # another file system, or the name taken: a copy
            shutil.copy2(source, target)

    if reference.raw.is_dir():
        shutil.copytree(reference.raw, layout.raw, dirs_exist_ok=True, copy_function=link)


def install_classifier(reference: Any, layout: Any) -> None:
    """Give ``layout``'s prepared data (and each part of its partition) the domain classifier of
    ``reference`` (both Layouts): every seed and data share scored in one feature space, the
    yardstick trained once, where each run's data are prepared at its own seed."""
    from gancore.io import copy_file, read_json, write_json
    from gancore.layout import MIXTURE_FILE
    from gancore.partition import copy_classifier

    copy_file(reference.classifier, layout.classifier)
    partition = layout.prepared / MIXTURE_FILE
    parts = [p["index"] for p in read_json(partition)["parts"]] if partition.exists() else []
    for index in parts:  # as prepare gives each part the whole's
        copy_classifier(layout, index)
    info = read_json(reference.prepared_meta)["classifier"]
    for target in [layout, *(layout.part(i) for i in parts)]:
        meta = read_json(target.prepared_meta)
        meta["classifier"] = info
        write_json(target.prepared_meta, meta)


def cost_unit(device: str) -> str:
    """What :func:`run_stages` measures on ``device``: CPU time, or on a GPU the wall clock."""
    return "wall" if device == "cuda" else "CPU"


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """Usage error (exit 2) for ``--device cuda`` where torch sees no CUDA device."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False); use --device cpu")


def pool(workers: int, device: str) -> ProcessPoolExecutor:
    """The benchmark's worker processes; started fresh (spawn) for CUDA, which a forked child of
    a process that touched CUDA cannot initialise."""
    context = multiprocessing.get_context("spawn") if device == "cuda" else None
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def gather(futures: Iterable[Future], line: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    """The futures' results in submission order, each printed as ``line(result)`` once it is in."""
    results = []
    for future in futures:
        result = future.result()
        results.append(result)
        print(line(result), flush=True)
    return results


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every seeded quality benchmark takes: workers, device, --tiny, --json, --out."""
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), help="parallel single-threaded runs")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where every run trains (cuda: the runs share the GPU, and the cost column is wall-clock minutes)",
    )
    parser.add_argument("--tiny", action="store_true", help="seconds per run, for CI (numbers meaningless)")
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    parser.add_argument("--out", type=Path, help="keep the runs' folders here (default: a temporary folder)")


def next_length(results: list[dict[str, Any]], seconds_left: float) -> int | None:
    """The longest length, in thousands of steps, that the runs can continue to and be scored in
    ``seconds_left``, from the last round (side by side: its slowest run): the pace of a step once
    warm, the rest of the training stage as a fixed start-up, and the scoring with a margin, in
    four fifths of the time. None if under a thousand more steps fit."""
    ran = [(r, r["steps"] - (r["continued_from"] or 0)) for r in results]
    ran = [(r, n) for r, n in ran if n > 0]
    if not ran:  # nothing trained this round (scored as an earlier invocation left them): no pace
        return None
    pace = max(r.get("pace_s") or r["train_wall_s"] / n for r, n in ran)
    start_up = max(max(0.0, r["train_wall_s"] - n * pace) for r, n in ran)
    scoring = max(r["score_wall_s"] for r in results)
    # A fifth of the time in reserve: side by side on one GPU the pace slows as p rises (measured on
    # an H200: 21 -> 26 ms a step for held-out steering, 12 runs, p 0 -> 0.12).
    more = int((0.8 * seconds_left - start_up - 1.5 * scoring) / pace) // 1000 * 1000
    return results[0]["steps"] + more if more >= 1000 else None


def rising_lengths(text: str) -> list[int]:
    """``--steps``: one length or rising ones, comma-separated."""
    try:
        lengths = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of steps, or rising numbers separated by commas (20000,40000)") from None
    if any(n < 1 for n in lengths) or lengths != sorted(set(lengths)):
        raise argparse.ArgumentTypeError(f"{text!r}: steps must be positive and rising (20000,40000)")
    return lengths
