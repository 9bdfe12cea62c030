"""Mode collapse and its cures on the PacGAN 2D protocols and a vector file, beside PacGAN's Table 1.

Two tables, each mean +- standard error over seeds, scored by ``gan diagnose`` (2,500 samples from
fixed z; high quality within 3 sigma of a centre, or its Mahalanobis form for the clusters found in
a points file; a mode is covered by one high-quality sample; reverse KL of the mode histogram):

1. **Defaults.** Each data set with nothing but its name: ``data.name=ring8``, ``grid25``, and
   ``points`` on a file this benchmark writes (five 2-D Gaussians of unequal weights and widths,
   in units 100x apart: data the defaults were not chosen on), and ``tilted`` (a points file of
   two long thin clusters side by side at 45 degrees to the columns, and a round one: a diagonal
   mixture cut each thin one into many pieces), and ``strays`` (the points file with 10 stray rows
   in a box five times as wide: they were a broad sixth cluster that made noise high quality), and
   ``rare`` (the points file with a real cluster of 40 rows, 0.2 %, away from the others), and
   ``flat`` (the points file with 5,000 flat rows, 20 %, uniform over its box: a third table
   says where the samples outside every cluster went).
   The mixture finds its parts itself
   (``mixture.parts: auto``); the targets of the issue are checked and printed.
2. **Remedies.** Single-GAN baselines that go wrong: one GAN of the defaults
   (``mixture.enabled=false``) on ring8 and grid25, and on ring8 a minimax GAN whose discriminator
   dominates (lr_d 2e-3, lr_g 1e-4, 5 D steps). Each baseline's own diagnosis names its remedies
   (``diagnose.json`` -> ``remedy_settings``); every remedy with settings runs on the same seed,
   and the table says whether it covered more modes without losing high quality.

    python benchmarks/collapse.py                     # 10 seeds of the defaults, 3 of the remedies
    python benchmarks/collapse.py --table defaults --seeds 3 --data ring8
    python benchmarks/collapse.py --tiny              # CI smoke size: seconds per run, numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gancore.report import mean_se, pm  # noqa: E402
from runs import add_run_arguments, check_device, cost_unit, pool, run_stages  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POINTS_FILE = "blobs5.csv"
TILTED_FILE = "tilted3.csv"
STRAYS_FILE = "blobs5_strays.csv"
RARE_FILE = "blobs5_rare.csv"
FLAT_FILE = "blobs5_flat.csv"
DATA_SETS = ("ring8", "grid25", "points", "tilted", "strays", "rare", "flat")
# The baselines of the remedies table: label (a --baseline choice, so one word a shell keeps whole) -> (data, settings).
BASELINES: dict[str, tuple[str, list[str]]] = {
    "ring8/GAN": ("ring8", ["mixture.enabled=false"]),
    "grid25/GAN": ("grid25", ["mixture.enabled=false"]),
    "ring8/minimax-dominant-D": (
        "ring8",
        ["mixture.enabled=false", "loss.name=minimax", "train.lr_d=0.002", "train.lr_g=0.0001", "train.n_critic=5"],
    ),
}
TINY = [
    "train.steps=60",
    "train.batch_size=64",
    "mixture.steps=30",
    "mixture.max_parts=10",
    "data.n_train=2000",
    "data.n_test=500",
    "train.monitor_every=null",
    "train.checkpoint_every=1000",
]
# The targets for the defaults: modes, high-quality share, reverse KL.
TARGETS = {"ring8": (8, 0.97, 0.03), "grid25": (25, 0.95, 0.03)}
# PacGAN Table 1 (../shared/reference.md): modes, high-quality %, reverse KL, each (mean, s.e.).
PAPER: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "ring8": {
        "baseline": ((6.3, 0.5), (98.2, 0.2), (0.45, 0.09)),
        "pack2": ((7.9, 0.1), (95.6, 2.0), (0.07, 0.03)),
        "pack4": ((7.8, 0.1), (95.9, 1.4), (0.07, 0.02)),
    },
    "grid25": {
        "baseline": ((17.3, 0.8), (94.8, 0.7), (0.70, 0.07)),
        "pack2": ((23.8, 0.7), (91.3, 0.8), (0.13, 0.04)),
        "pack4": ((24.8, 0.2), (93.6, 0.6), (0.04, 0.01)),
    },
}
SCORES = ("modes_covered", "modes_total", "high_quality_fraction", "mode_kl")
# Where the data hold flat rows outside every cluster (the diagnosis tests them): the samples there.
OUTSIDE = (
    "outside_share",
    "outside_share_real",
    "outside_cells",
    "outside_cells_short",
    "outside_duplicate_rate",
    "outside_real_duplicate_rate",
)


def write_points(path: Path) -> Path:
    """The held-out vector file: five 2-D Gaussians, weights 0.35..0.08, widths 0.5..4, the second
    column in units 100x the first (the layout of tests/diagnostics/test_collapse_cases.py)."""
    rng = np.random.default_rng(2024)
    centres = np.array([[0, 0], [50, 0], [0, 20], [60, 30], [20, 40]], float)
    widths = np.array([[3, 1], [1, 1], [2, 2], [0.5, 0.5], [4, 1]], float)
    labels = rng.choice(5, 20_000, p=[0.35, 0.25, 0.2, 0.12, 0.08])
    x = (centres[labels] + widths[labels] * rng.standard_normal((20_000, 2))) * np.array([1.0, 100.0])
    np.savetxt(path, x, delimiter=",", header="length,mass", comments="")
    return path


def write_tilted(path: Path) -> Path:
    """The second held-out file: two parallel clusters (sds 8 along, 0.4 across, 4 apart) turned
    45 degrees from the columns, and a round one (sd 1) beside them; weights 0.4, 0.4, 0.2."""
    rng = np.random.default_rng(2026)
    labels = rng.choice(3, 20_000, p=[0.4, 0.4, 0.2])
    along, across = 8 * rng.standard_normal(20_000), 0.4 * rng.standard_normal(20_000) + np.where(labels == 0, -2.0, 2.0)
    x = np.stack([along - across, along + across], 1) / np.sqrt(2)
    x[labels == 2] = np.array([20.0, -20.0]) + rng.standard_normal((int((labels == 2).sum()), 2))
    np.savetxt(path, x, delimiter=",", header="u,v", comments="")
    return path


def write_strays(path: Path) -> Path:
    """The third held-out file: the points file's 20,000 rows and 10 stray ones (0.05 %), drawn
    uniformly from a box five times as wide in each column (glitches in a logger)."""
    x = np.loadtxt(write_points(path), delimiter=",", skiprows=1)
    rng = np.random.default_rng(2027)
    lo, hi = x.min(0), x.max(0)
    x = np.concatenate([x, lo - 2 * (hi - lo) + 5 * (hi - lo) * rng.random((10, 2))])
    np.savetxt(path, x[rng.permutation(len(x))], delimiter=",", header="length,mass", comments="")
    return path


def write_rare(path: Path) -> Path:
    """The fourth held-out file: the points file's 20,000 rows and a real cluster of 40 (0.2 %),
    tight (sds 0.5 and 50, as the tightest of the five) and away from the rest: k-means never
    gave it a start cell, so a count with it scored a large cluster split in two instead."""
    x = np.loadtxt(write_points(path), delimiter=",", skiprows=1)
    rng = np.random.default_rng(2028)
    x = np.concatenate([x, np.array([40.0, -2000.0]) + np.array([0.5, 50.0]) * rng.standard_normal((40, 2))])
    np.savetxt(path, x[rng.permutation(len(x))], delimiter=",", header="length,mass", comments="")
    return path


def write_flat(path: Path) -> Path:
    """The fifth held-out file: the points file's 20,000 rows and 5,000 flat ones (20 %) drawn
    uniformly over their box (a logger's readings between regimes): flat rows the data hold, which
    the mixture trains as a part of their own and the diagnosis tests as a mode."""
    x = np.loadtxt(write_points(path), delimiter=",", skiprows=1)
    rng = np.random.default_rng(2029)
    lo, hi = x.min(0), x.max(0)
    x = np.concatenate([x, lo + (hi - lo) * rng.random((5_000, 2))])
    np.savetxt(path, x[rng.permutation(len(x))], delimiter=",", header="length,mass", comments="")
    return path


# The data sets read from a file this benchmark writes: (file name, writer).
POINT_FILES = {
    "points": (POINTS_FILE, write_points),
    "tilted": (TILTED_FILE, write_tilted),
    "strays": (STRAYS_FILE, write_strays),
    "rare": (RARE_FILE, write_rare),
    "flat": (FLAT_FILE, write_flat),
}


def data_sets(data: str, root: str) -> list[str]:
    if data in POINT_FILES:
        return ["data.name=points", f"data.path={Path(root) / POINT_FILES[data][0]}"]
    return [f"data.name={data}"]


def run_one(data: str, label: str, seed: int, sets: list[str], root: str) -> dict[str, Any]:
    """Prepare, train, sample and diagnose one configuration in its own folder; return its scores."""
    from gancore.config import load_params
    from gancore.layout import Layout

    overrides = [f"seed={seed}", "device=cpu", "tracking.enabled=false", *data_sets(data, root), *sets]
    params = load_params(REPO / "params.yaml", overrides)
    folder = "-".join(part for part in (data, label, str(seed)) if part).replace("/", "_").replace(" ", "_").replace(",", "")
    layout = Layout(Path(root) / folder)
    cpu_s = run_stages(params, layout, ("prepare", "train", "sample", "diagnose"))
    diagnosis = json.loads(layout.diagnose_json.read_text())
    mixture = layout.prepared / "mixture.json"
    parts = len(json.loads(mixture.read_text())["parts"]) if params.mixture.enabled and mixture.is_file() else None
    return {
        "data": data,
        "label": label,
        "seed": seed,
        "sets": sets,
        "cpu_s": cpu_s,
        "parts": parts,
        "verdict": diagnosis["verdict"],
        "remedies": [r for r in diagnosis.get("remedy_settings") or [] if r.get("sets")],
        # None (no high-quality sample to histogram) becomes NaN, which the summary carries as NaN.
        **{k: float("nan") if diagnosis.get(k) is None else float(diagnosis[k]) for k in SCORES},
        "outside": {k: diagnosis.get(k) for k in OUTSIDE},
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "n": len(rows),
        "modes": mean_se([r["modes_covered"] for r in rows]),
        "modes_total": mean_se([r["modes_total"] for r in rows]),
        "high_quality_pct": mean_se([100 * r["high_quality_fraction"] for r in rows]),
        "reverse_kl": mean_se([r["mode_kl"] for r in rows]),
        "parts": sorted({r["parts"] for r in rows if r.get("parts") is not None}),
        "healthy": sum(r["verdict"] == "healthy" for r in rows),
        "cpu_s": sum(r["cpu_s"] for r in rows) / len(rows),
    }


def cell(s: dict[str, Any] | tuple[tuple[float, float], ...], kl_digits: int = 4) -> str:
    """Modes / high-quality % / reverse KL; KL to 4 places (a good run's is about 0.001), the
    paper's rows to the places it printed."""
    modes, hq, kl = (s["modes"], s["high_quality_pct"], s["reverse_kl"]) if isinstance(s, dict) else s
    return f"{pm(modes, 1)} / {pm(hq, 1)} / {pm(kl, kl_digits)}"


def defaults_table(results: list[dict[str, Any]], unit: str = "CPU") -> tuple[str, dict[str, Any]]:
    summary, lines = (
        {},
        [f"| data | seeds | parts chosen | modes / high-quality % / reverse KL | healthy | target | met | {unit} s/run |"],
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for data in DATA_SETS:
        rows = [r for r in results if r["data"] == data and r["label"] == "defaults"]
        if not rows:
            continue
        s = summary[data] = summarise(rows)
        target = TARGETS.get(data)
        met = None
        if target:
            met = all(
                r["modes_covered"] >= target[0] and r["high_quality_fraction"] >= target[1] and r["mode_kl"] <= target[2] for r in rows
            )
        target_text = f"{target[0]} / {100 * target[1]:.0f} / {target[2]}" if target else "-"
        met_text = "-" if met is None else f"{'yes' if met else 'NO'} (every seed)"
        parts = ", ".join(str(p) for p in s["parts"])
        found = f" of {s['modes_total'][0]:.0f} found" if data in POINT_FILES else ""
        lines.append(
            f"| {data} | {s['n']} | {parts} | {cell(s)}{found} | {s['healthy']}/{s['n']} | {target_text} | {met_text} | {s['cpu_s']:.0f} |"
        )
    return "\n".join(lines), summary


def outside_table(results: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The defaults' runs on data whose rows outside every cluster the diagnosis tests: samples
    outside against the training rows' share, regions there short of samples, near duplicates
    among them against the training rows there (mean +- s.e. over the seeds)."""
    summary: dict[str, Any] = {}
    lines = [
        "| data | seeds | samples outside % (training rows) | regions outside short | near duplicates outside % (training rows) | healthy |",
        "|---|---|---|---|---|---|",
    ]
    for data in DATA_SETS:
        rows = [r for r in results if r["data"] == data and r["label"] == "defaults" and (r.get("outside") or {}).get("outside_cells")]
        if not rows:
            continue

        def stat(key: str, scale: float = 100.0, rows: list[dict[str, Any]] = rows) -> tuple[float, float]:
            return mean_se([scale * float(r["outside"][key] if r["outside"].get(key) is not None else float("nan")) for r in rows])

        s = summary[data] = {k: stat(k, 1.0 if k.startswith("outside_cells") else 100.0) for k in OUTSIDE}
        lines.append(
            f"| {data} | {len(rows)} | {pm(s['outside_share'], 1)} ({pm(s['outside_share_real'], 1)}) "
            f"| {pm(s['outside_cells_short'], 1)} of {pm(s['outside_cells'], 1)} "
            f"| {pm(s['outside_duplicate_rate'], 1)} ({pm(s['outside_real_duplicate_rate'], 1)}) "
            f"| {sum(r['verdict'] == 'healthy' for r in rows)}/{len(rows)} |"
        )
    return "\n".join(lines), summary


def remedies_table(results: list[dict[str, Any]], unit: str = "CPU") -> tuple[str, dict[str, Any]]:
    summary: dict[str, Any] = {}
    lines = [
        f"| baseline | run | seeds | ours | PacGAN Table 1 | healthy | more modes, high quality kept | {unit} s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, (data, _) in BASELINES.items():
        base_rows = [r for r in results if r["label"] == key]
        if not base_rows:
            continue
        base = summary[key] = summarise(base_rows)
        labels = ["baseline"] + sorted({r["remedy"] for r in results if r.get("baseline") == key})
        for label in labels:
            rows = base_rows if label == "baseline" else [r for r in results if r.get("baseline") == key and r.get("remedy") == label]
            s = base if label == "baseline" else summarise(rows)
            summary[f"{key}/{label}"] = s
            verdict = "-"
            if label != "baseline":
                by_seed = {r["seed"]: r for r in base_rows}
                gains = [
                    r["modes_covered"] >= by_seed[r["seed"]]["modes_covered"]
                    and r["high_quality_fraction"] >= by_seed[r["seed"]]["high_quality_fraction"] - 0.01
                    and (r["modes_covered"], r["high_quality_fraction"])
                    != (by_seed[r["seed"]]["modes_covered"], by_seed[r["seed"]]["high_quality_fraction"])
                    for r in rows
                ]
                verdict = f"{sum(gains)}/{len(gains)} seeds"
            paper = PAPER.get(data, {}).get(label) if key.endswith("/GAN") else None
            lines.append(
                f"| {key} | {label} | {s['n']} | {cell(s)} | {cell(paper, 2) if paper else '-'} | {s['healthy']}/{s['n']} | {verdict} | {s['cpu_s']:.0f} |"
            )
    return "\n".join(lines), summary


def _progress(r: dict[str, Any], unit: str) -> None:
    name = r["label"] + (f" + {r['remedy']}" if r.get("remedy") else "")
    print(
        f"{r['data']:7s} {name:34s} seed {r['seed']}: {r['modes_covered']:.0f}/{r['modes_total']:.0f} modes, "
        f"{100 * r['high_quality_fraction']:.1f} % HQ, rKL {r['mode_kl']:.3f}, {r['verdict']}, {r['cpu_s']:.0f} {unit}-s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="append", choices=("defaults", "remedies"), help="tables to run (default: both)")
    parser.add_argument("--seeds", type=int, help="seeds of the defaults table (default 10; --tiny: 1)")
    parser.add_argument("--remedy-seeds", type=int, help="seeds of the remedies table (default 3; --tiny: 1)")
    parser.add_argument("--data", action="append", choices=DATA_SETS, help="data sets of the defaults table (default: all)")
    parser.add_argument("--baseline", action="append", choices=list(BASELINES), help="baselines of the remedies table (default: all)")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (1 if args.tiny else 10)
    remedy_seeds = args.remedy_seeds if args.remedy_seeds is not None else (1 if args.tiny else 3)
    if min(seeds, remedy_seeds, args.workers) < 1:
        parser.error("--seeds, --remedy-seeds and --workers must be at least 1")
    tables = args.table or ["defaults", "remedies"]
    check_device(parser, args.device)
    unit = cost_unit(args.device)
    sets = [*(TINY if args.tiny else []), f"device={args.device}"]
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gancore-collapse-") as scratch:
        root = str(args.out or scratch)
        Path(root).mkdir(parents=True, exist_ok=True)
        for name, writer in POINT_FILES.values():
            writer(Path(root) / name)
        with pool(args.workers, args.device) as workers:
            jobs = []
            if "defaults" in tables:
                jobs += [workers.submit(run_one, d, "defaults", s, sets, root) for d in args.data or DATA_SETS for s in range(seeds)]
            if "remedies" in tables:
                jobs += [
                    workers.submit(run_one, BASELINES[k][0], k, s, [*sets, *BASELINES[k][1]], root)
                    for k in args.baseline or BASELINES
                    for s in range(remedy_seeds)
                ]
            followers = []
            for job in jobs:
                r = job.result()
                results.append(r)
                _progress(r, unit)
                if r["label"] in BASELINES:  # its own diagnosis names the remedies to try
                    for remedy in r["remedies"]:
                        extra = [*r["sets"], *remedy["sets"]]
                        followers.append(
                            (
                                remedy["name"],
                                r["label"],
                                workers.submit(run_one, r["data"], f"{r['label']} {remedy['name']}", r["seed"], extra, root),
                            )
                        )
            for name, baseline, job in followers:
                r = {**job.result(), "baseline": baseline, "remedy": name}
                results.append(r)
                _progress(r, unit)
    wall = time.perf_counter() - start
    out: dict[str, Any] = {"runs": results, "tiny": args.tiny}
    print()
    if "defaults" in tables:
        text, out["defaults"] = defaults_table(results, unit)
        print("Defaults only (data.name, and data.path for points): modes / high-quality % / reverse KL, mean +- s.e.\n")
        print(text + "\n")
        text, out["outside"] = outside_table(results)
        if out["outside"]:
            print("The same runs where the data hold flat rows outside every cluster, mean +- s.e.\n")
            print(text + "\n")
    if "remedies" in tables:
        text, out["remedies"] = remedies_table(results, unit)
        print("Single-GAN baselines and the remedies their diagnosis proposed (same seeds; PacGAN: 10 trials)\n")
        print(text + "\n")
    print(f"{len(results)} runs in {wall:.0f} s wall on {args.workers} workers")
    if args.json:
        from gancore.io import write_json

        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
