"""Image GANs against the published numbers: the example parameter files, trained and scored over seeds.

For each example (``examples/params/<name>.yaml``) the domain classifier is trained once (seed
0: it scores every seed); each seed prepares its data without one, takes seed 0's, and trains,
samples, evaluates and diagnoses in its own folder. The table gives mean +- s.e. over seeds of
the generated domain Inception Score, modes covered, high-quality %, FID in the domain
classifier's feature space, and the verdicts, beside the same classifier's score of the real
test set (the ceiling) and the published MNIST score (9.88, ChunyuanLI/MNIST_Inception_Score).
Each seed's sample grid is kept under ``--out``.

    python benchmarks/quality_images.py                          # mnist-dcgan, fashion-dcgan; 3 seeds
    python benchmarks/quality_images.py --example mnist-dcgan --seeds 1 --out bench-out
    python benchmarks/quality_images.py --tiny                   # CI smoke size: numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gancore.report import mean_se, pm  # noqa: E402
from runs import NO_CLASSIFIER, gather, install_classifier, run_stages, share_raw  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "params"
DEFAULT_EXAMPLES = ("mnist-dcgan", "fashion-dcgan")  # cifar10-resnet_sn: a GPU job (--example)
PUBLISHED_IS = {"mnist": 9.88}  # the MNIST score of the real test set (reference.md)
TINY = [
    "data.n_train=1000",
    "data.n_test=500",
    "data.classifier_epochs=1",
    "mixture.steps=10",
    "train.steps=10",
    "train.batch_size=32",
    "model.options.width=8",
    "train.monitor_every=null",
    "sample.n=500",
    "evaluate.max_real=500",
    "diagnose.ndb_bins=10",
]
STANDARD_TINY_N = 40  # images of each kind the --tiny --standard smoke run embeds at 299 px


def params_for(example: str, seed: int, sets: list[str]) -> Any:
    from gancore.config import load_params

    return load_params(EXAMPLES / f"{example}.yaml", [f"seed={seed}", "device=cpu", "tracking.enabled=false", *sets])


def prepare(example: str, sets: list[str], root: str) -> float:
    from gancore.layout import Layout

    return run_stages(params_for(example, 0, sets), Layout(Path(root) / example / "prepared"), ("prepare",))


def run_seed(example: str, seed: int, sets: list[str], root: str) -> dict[str, Any]:
    from gancore.layout import Layout

    shared, layout = Layout(Path(root) / example / "prepared"), Layout(Path(root) / example / f"seed{seed}")
    # the data at the seed's own draw (one seed decides them too, and the stages check it), scored
    # by seed 0's domain classifier
    params = params_for(example, seed, [*sets, NO_CLASSIFIER])
    share_raw(shared, layout)
    cpu_s = run_stages(params, layout, ("prepare",))
    install_classifier(shared, layout)
    cpu_s += run_stages(params, layout, ("train", "sample", "evaluate", "diagnose"))
    evaluation = json.loads(layout.evaluate_json.read_text())
    diagnosis = json.loads(layout.diagnose_json.read_text())
    return {
        "example": example,
        "seed": seed,
        "train_cpu_min": cpu_s / 60,
        "is_mean": evaluation["is_mean"],
        "is_real_mean": evaluation["is_real_mean"],
        "fid": evaluation["fid"],
        "modes_covered": diagnosis["modes_covered"],
        "modes_total": diagnosis["modes_total"],
        "high_quality_fraction": diagnosis["high_quality_fraction"],
        "verdict": diagnosis["verdict"],
        "picture": str(layout.samples_picture),
    }


def standard_space(example: str, seed: int, sets: list[str], root: str, limit: int | None, network: Any) -> dict[str, Any]:
    """The seed's samples against the real images ``gan evaluate`` drew, in the papers' space (TF
    Inception 2015-12-05 pool features, the offline weights of ``gancore[inception]``): the same
    images, classifier path and figures as ``gan evaluate -S evaluate.classifier=inception_tf``.
    ``limit``: at most this many of each (the --tiny smoke size); None: all. ``network``: the
    loaded ``inception_tf()``."""

    from real_vs_real import standard_figures

    from gancore.classifiers import classify
    from gancore.data.prepared import load_prepared
    from gancore.layout import Layout
    from gancore.metrics.inputs import seeded_subset
    from gancore.sampling import load_samples

    params, layout = params_for(example, seed, sets), Layout(Path(root) / example / f"seed{seed}")
    prepared = load_prepared(layout.prepared)
    real = prepared.test[seeded_subset(len(prepared.test), params.evaluate.max_real, params.seed)]
    generated = load_samples(layout)
    if limit is not None:
        real, generated = real[:limit], generated[:limit]
    start = time.process_time()
    real_features = classify(network, real, params.evaluate.batch_size)[1]
    generated_features = classify(network, generated, params.evaluate.batch_size)[1]
    figures = standard_figures(real_features, generated_features, params.seed)
    return {**figures, "weights": network.weights, "cpu_min": (time.process_time() - start) / 60}


def _pm_known(values: list[float | None]) -> str:
    """mean +- s.e. of the values there are ("n/a" when none: FID-infinity needs a few hundred samples)."""
    known = [v for v in values if v is not None]
    return pm(mean_se(known), 2) if known else "n/a"


def table(results: list[dict[str, Any]]) -> str:
    standard = all("standard" in r for r in results)
    lines = [
        "generated domain IS / modes / high-quality % / FID (domain features), mean +- s.e. over seeds",
        "",
        "| example | seeds | IS | real IS (same classifier) | published real IS | modes | high quality % | FID | healthy | CPU-min/seed |"
        + (" FID (TF Inception) | FID-infinity (TF Inception) | n each |" if standard else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if standard else ""),
    ]
    for example in dict.fromkeys(r["example"] for r in results):
        rows = [r for r in results if r["example"] == example]
        data = example.split("-")[0]
        published = PUBLISHED_IS.get(data)

        def col(key: str, scale: float = 1.0, rows: list[dict[str, Any]] = rows) -> tuple[float, float]:
            return mean_se([scale * r[key] for r in rows])

        lines.append(
            f"| {example} | {len(rows)} | {pm(col('is_mean'), 2)} | {rows[0]['is_real_mean']:.2f} | "
            f"{'-' if published is None else f'{published:.2f}'} | {pm(col('modes_covered'), 1)}/{rows[0]['modes_total']} | "
            f"{pm(col('high_quality_fraction', 100), 1)} | {pm(col('fid'), 2)} | "
            f"{sum(r['verdict'] == 'healthy' for r in rows)}/{len(rows)} | {pm(col('train_cpu_min'), 1)} |"
            + (
                f" {pm(mean_se([r['standard']['fid'] for r in rows]), 2)} | "
                f"{_pm_known([r['standard']['fid_infinity'] for r in rows])} | {rows[0]['standard']['n_generated']:,} |"
                if standard
                else ""
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", action="append", help=f"examples/params/<name>.yaml (default: {', '.join(DEFAULT_EXAMPLES)})")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 3; --tiny: 1)")
    parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), help="seeds trained at once, one thread each")
    parser.add_argument("-S", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="more parameter overrides")
    parser.add_argument("--tiny", action="store_true", help="a few steps on a small subset: a smoke run for CI")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--out", type=Path, help="keep the runs (and their sample grids) here (default: a temporary folder)")
    parser.add_argument(
        "--standard", action="store_true", help="also FID, FID-infinity and KID in the TF Inception space (needs gancore[inception])"
    )
    args = parser.parse_args(argv)
    examples = args.example or list(DEFAULT_EXAMPLES)
    missing = [e for e in examples if not (EXAMPLES / f"{e}.yaml").is_file()]
    if missing:
        known = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
        parser.error(f"no example {', '.join(missing)} in {EXAMPLES}; known: {', '.join(known)}")
    seeds = args.seeds if args.seeds is not None else (1 if args.tiny else 3)
    if seeds < 1 or args.workers < 1:
        parser.error("--seeds and --workers must be at least 1")
    sets = (TINY if args.tiny else []) + args.sets
    network = None
    if args.standard:  # before any training: a missing gancore[inception] fails now, not an hour in
        from gancore.classifiers.inception import inception_tf

        network = inception_tf()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gancore-quality-") as scratch:
        root = str(args.out or scratch)
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for example, done in zip(examples, pool.map(prepare, examples, [sets] * len(examples), [root] * len(examples))):
                print(f"{example}: prepared in {done / 60:.1f} CPU-min", flush=True)
            futures = [pool.submit(run_seed, e, s, sets, root) for e in examples for s in range(seeds)]
            results = gather(
                futures,
                lambda r: (
                    f"{r['example']} seed {r['seed']}: IS {r['is_mean']:.3f} (real {r['is_real_mean']:.3f}), "
                    f"{r['modes_covered']}/{r['modes_total']} modes, {100 * r['high_quality_fraction']:.1f} % HQ, "
                    f"FID {r['fid']:.2f}, {r['verdict']}, {r['train_cpu_min']:.1f} CPU-min"
                ),
            )
            if args.standard:
                # After the pool's training: one run at a time on every core (Inception-v3 at 299 px is the cost).
                import torch

                threads = torch.get_num_threads()
                torch.set_num_threads(os.cpu_count() or 1)
                try:
                    for r in results:
                        r["standard"] = standard_space(r["example"], r["seed"], sets, root, STANDARD_TINY_N if args.tiny else None, network)
                        s = r["standard"]
                        print(
                            f"{r['example']} seed {r['seed']}: TF Inception FID {s['fid']:.2f} at n = {s['n_generated']:,}, "
                            f"FID-infinity {s['fid_infinity']}, {s['cpu_min']:.1f} CPU-min",
                            flush=True,
                        )
                finally:  # main() is called in-process too (tests): the caller's thread count is its own
                    torch.set_num_threads(threads)
    print()
    print(table(results))
    print(f"\n{len(results)} runs in {(time.perf_counter() - start) / 60:.1f} min wall on {args.workers} workers")
    if args.json:
        from gancore.io import write_json

        write_json(args.json, {"runs": results, "tiny": args.tiny})
    return 0


if __name__ == "__main__":
    sys.exit(main())
