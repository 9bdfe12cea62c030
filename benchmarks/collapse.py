"""Mode collapse and its remedies on the PacGAN 2D protocols, beside PacGAN's Table 1.

For each data set (ring8, grid25) and seed, four ways to train on the same prepared data:

- GAN: one GAN (``mixture.enabled=false``) with this project's defaults;
- PacGAN2 / PacGAN4: the same with the discriminator judging 2 / 4 samples jointly
  (``model.pack``), the settings the diagnosis proposes for a collapsed run;
- mixture: one GAN per k-means part of the data (the default; ``mixture.parts`` = the number of
  modes, ``mixture.steps`` per part).

Each run is scored by ``gan diagnose`` with the protocol of ``../shared/reference.md`` (2,500
samples from fixed z; high quality within 3 sigma of a centre; a mode is covered by one
high-quality sample; reverse KL of the mode histogram). The table gives mean +- standard error
over the seeds and PacGAN's published row beside ours (10 trials there). Runs go to a process
pool of ``--workers`` single-threaded processes.

    python benchmarks/collapse.py                    # 5 seeds, ring8 and grid25 (about 1 CPU-hour)
    python benchmarks/collapse.py --seeds 3 --data ring8
    python benchmarks/collapse.py --tiny             # CI smoke size: seconds per run, numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import mean_se, pm, run_stages  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

METHODS: dict[str, list[str]] = {
    "GAN": ["mixture.enabled=false"],
    "PacGAN2": ["mixture.enabled=false", "model.pack=2"],
    "PacGAN4": ["mixture.enabled=false", "model.pack=4"],
    "mixture": ["mixture.enabled=true"],
}
# Per data set: the mixture's parts are its modes; grid25's parts have 1/25 of the data each and
# converge in fewer steps (measured: 25/25 modes, 99 % high quality at 500 steps).
DATA_SETS: dict[str, list[str]] = {
    "ring8": ["data.name=ring8", "mixture.parts=8", "mixture.steps=1000"],
    "grid25": ["data.name=grid25", "mixture.parts=25", "mixture.steps=500"],
}
TINY = [
    "train.steps=60",
    "train.batch_size=64",
    "mixture.steps=30",
    "data.n_train=2000",
    "data.n_test=500",
    "train.monitor_every=null",
    "train.checkpoint_every=1000",
]
# PacGAN Table 1 (../shared/reference.md): modes, high-quality %, reverse KL, each (mean, s.e.).
PAPER: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "ring8": {
        "GAN": ((6.3, 0.5), (98.2, 0.2), (0.45, 0.09)),
        "PacGAN2": ((7.9, 0.1), (95.6, 2.0), (0.07, 0.03)),
        "PacGAN4": ((7.8, 0.1), (95.9, 1.4), (0.07, 0.02)),
    },
    "grid25": {
        "GAN": ((17.3, 0.8), (94.8, 0.7), (0.70, 0.07)),
        "PacGAN2": ((23.8, 0.7), (91.3, 0.8), (0.13, 0.04)),
        "PacGAN4": ((24.8, 0.2), (93.6, 0.6), (0.04, 0.01)),
    },
}
SCORES = ("modes_covered", "high_quality_fraction", "mode_kl")


def run_one(data: str, method: str, seed: int, sets: list[str], root: str) -> dict[str, Any]:
    """Train, sample and diagnose one configuration in its own folder; return its scores."""
    from gancore.config import load_params
    from gancore.layout import Layout

    overrides = [f"seed={seed}", "device=cpu", "tracking.enabled=false", *DATA_SETS[data], *METHODS[method], *sets]
    params = load_params(REPO / "params.yaml", overrides)
    layout = Layout(Path(root) / f"{data}-{method}-{seed}")
    cpu_s = run_stages(params, layout, ("prepare", "train", "sample", "diagnose"))
    diagnosis = json.loads(layout.diagnose_json.read_text())
    return {
        "data": data,
        "method": method,
        "seed": seed,
        "cpu_s": cpu_s,
        "verdict": diagnosis["verdict"],
        # None (no high-quality sample to histogram) becomes NaN, which the summary carries as NaN.
        **{k: float("nan") if diagnosis[k] is None else float(diagnosis[k]) for k in SCORES},
    }


def cell(values: tuple[tuple[float, float], ...]) -> str:
    modes, hq, kl = values
    return f"{pm(modes, 1)} / {pm(hq, 1)} / {pm(kl, 2)}"


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for data in DATA_SETS:
        for method in METHODS:
            rows = [r for r in results if r["data"] == data and r["method"] == method]
            if not rows:
                continue
            modes = mean_se([r["modes_covered"] for r in rows])
            hq = mean_se([100 * r["high_quality_fraction"] for r in rows])
            kl = mean_se([r["mode_kl"] for r in rows])
            summary[f"{data}/{method}"] = {
                "n": len(rows),
                "modes": modes,
                "high_quality_pct": hq,
                "reverse_kl": kl,
                "cpu_s": statistics.fmean(r["cpu_s"] for r in rows),
                "healthy": sum(r["verdict"] == "healthy" for r in rows),
            }
    return summary


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "modes / high-quality % / reverse KL, mean +- s.e. over seeds (PacGAN: 10 trials)",
        "",
        "| data | method | seeds | ours | PacGAN Table 1 | healthy | CPU s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        data, method = key.split("/")
        paper = PAPER.get(data, {}).get(method)
        ours = cell((s["modes"], s["high_quality_pct"], s["reverse_kl"]))
        lines.append(
            f"| {data} | {method} | {s['n']} | {ours} | {cell(paper) if paper else '-'} | {s['healthy']}/{s['n']} | {s['cpu_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 per configuration (default 5; --tiny: 1)")
    parser.add_argument("--data", action="append", choices=list(DATA_SETS), help="data sets (default: all)")
    parser.add_argument("--method", action="append", choices=list(METHODS), help="methods (default: all)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="parallel single-threaded runs")
    parser.add_argument("--tiny", action="store_true", help="seconds per run, for CI (1 seed unless --seeds)")
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    parser.add_argument("--out", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (1 if args.tiny else 5)
    if seeds < 1 or args.workers < 1:
        parser.error("--seeds and --workers must be at least 1")
    sets = TINY if args.tiny else []
    jobs = [(d, m, s) for d in args.data or DATA_SETS for m in args.method or METHODS for s in range(seeds)]
    with tempfile.TemporaryDirectory(prefix="gancore-collapse-") as scratch:
        root = str(args.out or scratch)
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=min(args.workers, len(jobs))) as pool:
            futures = [pool.submit(run_one, d, m, s, sets, root) for d, m, s in jobs]
            results = []
            for future in futures:
                results.append(future.result())
                r = results[-1]
                print(
                    f"{r['data']:7s} {r['method']:8s} seed {r['seed']}: {r['modes_covered']:.0f} modes, "
                    f"{100 * r['high_quality_fraction']:.1f} % HQ, rKL {r['mode_kl']:.3f}, {r['verdict']}, {r['cpu_s']:.0f} CPU-s",
                    flush=True,
                )
        wall = time.perf_counter() - start
    summary = summarise(results)
    print()
    print(table(summary))
    print(f"\n{len(results)} runs in {wall:.0f} s wall on {min(args.workers, len(jobs))} workers")
    if args.json:
        from gancore.io import write_json

        write_json(args.json, {"runs": results, "summary": summary, "tiny": args.tiny})
    return 0


if __name__ == "__main__":
    sys.exit(main())
