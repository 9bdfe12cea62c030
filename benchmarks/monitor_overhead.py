"""The collapse monitor's cost: ``gan train`` with ``train.monitor_every`` on against off.

Both sides run the real training stage on the same prepared data and parameters (one GAN, the
default ring8 MLP unless ``-S`` says otherwise), alternately ``--repeats`` times after one untimed run each; each side's best
time is kept (the least disturbed by other work). The monitor side scores a fixed batch of z every
``--every`` steps and writes a progress picture, as in a default run.

    python benchmarks/monitor_overhead.py                      # 2,000 steps, monitor every 500
    python benchmarks/monitor_overhead.py --every 100 -S data.name=grid25
    python benchmarks/monitor_overhead.py --tiny               # CI smoke size
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def timed_train(params, layout) -> float:  # type: ignore[no-untyped-def]
    from gancore.stages import run_stage

    for folder in (layout.models, layout.checkpoints, layout.plots):
        shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    run_stage("train", params, layout, restart=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=500, help="train.monitor_every of the monitored side (default 500)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-S", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="more parameter overrides")
    ap.add_argument("--tiny", action="store_true", help="a few hundred steps, one repeat: a smoke run for CI")
    args = ap.parse_args(argv)
    if args.tiny:
        args.steps, args.every, args.repeats = 100, 50, 1
    os.environ.setdefault("GANCORE_PROGRESS", "0")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from gancore.config import load_params
    from gancore.layout import Layout
    from gancore.stages import run_stage

    repo = Path(__file__).resolve().parents[1]
    common = ["device=cpu", "mixture.enabled=false", "tracking.enabled=false", f"train.steps={args.steps}", *args.sets]
    common += [f"train.checkpoint_every={args.steps}"]
    sides = {
        "off": load_params(repo / "params.yaml", [*common, "train.monitor_every=null"]),
        "on": load_params(repo / "params.yaml", [*common, f"train.monitor_every={args.every}"]),
    }
    best = {side: float("inf") for side in sides}
    with tempfile.TemporaryDirectory(prefix="gancore-monitor-") as scratch:
        layout = Layout(Path(scratch))
        run_stage("prepare", sides["off"], layout)
        for params in sides.values():  # warm-up: imports, allocator, first-call dispatch
            timed_train(params, layout)
        for _ in range(args.repeats):
            for side, params in sides.items():
                best[side] = min(best[side], timed_train(params, layout))
    overhead = best["on"] / best["off"] - 1
    data = sides["off"].data.name
    print(f"{'run':34s} {'off_s':>8s} {'on_s':>8s} {'overhead':>9s}")
    print(f"{f'{data} {args.steps} steps, every {args.every}':34s} {best['off']:8.2f} {best['on']:8.2f} {100 * overhead:8.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
