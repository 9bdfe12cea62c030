"""Metric throughput: gancore.metrics against torchmetrics (IS + FID) and the `prdc` package (PRDC).

(a) IS + FID on images. Both sides run the same backbone on the same uint8 images: torch-fidelity's
    TF-compatible InceptionV3 (the network behind torch-fidelity's and torchmetrics' IS/FID), here
    with random weights because no pretrained weights can be downloaded offline. Throughput does
    not depend on the weights' values; the scores are meaningless except as a cross-check that
    both sides computed the same thing.
      ours:         one no-grad batched pass per image yields the pool features and the unbiased
                    logits together, then gancore.metrics.fid / inception_score_from_logits
      torchmetrics: FrechetInceptionDistance(feature=module).update(real=True/False) and
                    InceptionScore(feature=module).update on the fake images, then compute()
                    (its documented custom-extractor route: the fake images go through the
                    network once per metric, as when both metrics are used side by side)
(b) IS + FID from precomputed features at realistic sizes (default 10k x 2048, 1008 classes:
    full-rank covariances, which a CPU cannot reach through Inception in a benchmark's time):
    gancore.metrics vs the same torchmetrics metrics fed through an identity "feature" module.
(c) precision / recall / density / coverage at N x N points of dimension D:
      ours: gancore.metrics.compute_prdc (float64, chunked torch)   prdc: prdc.compute_prdc
    prdc is fed float32 features, its documented input (and half the memory of float64:
    it holds three N x N distance matrices at once). Default 10k x 10k at 64-D: the 2048-D
    version costs ~30x more distance arithmetic, minutes per side on two CPU cores.

Wall and process-CPU seconds are reported. The CPU figure is steadier on a shared machine but
misses prdc's sklearn worker processes, so PRDC is compared on wall time. The image section warms
the backbone up on one batch, then alternates the two sides ``--repeats`` times and keeps each
side's fastest run. ``--tiny`` runs a seconds-long version for CI (a small random CNN instead of
Inception).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from unittest import mock

import numpy as np
import torch

from gancore.metrics import compute_prdc, fid, inception_score_from_logits


def random_inception(seed: int) -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 returning (pool 2048, unbiased logits), random weights."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    class RandomInceptionV3(fe.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):
            # The constructor insists on loading the published weights; keep the random
            # initialisation instead (the patched download below hands over None).
            if state_dict is None:
                return None
            return super().load_state_dict(state_dict, *args, **kwargs)

    torch.manual_seed(seed)
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *args, **kwargs: None):
        model = RandomInceptionV3("inception-v3-compat-random", ["2048", "logits_unbiased"])
    # PyTorch's default conv init shrinks activations ~1/sqrt(3) per layer: after ~50 convs the
    # features would be ~1e-12 and every image alike. He init keeps them O(1).
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval()


class SmallBackbone(torch.nn.Module):
    """A few-layer random CNN with the same interface (uint8 images -> (features 64, logits 10)), for --tiny."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.fc = torch.nn.Linear(64, 10)
        self.eval()

    def forward(self, x):
        features = self.body((x.to(torch.float32) - 128) / 128)
        return features, self.fc(features) * 20


class Select(torch.nn.Module):
    """One output of the shared backbone, as torchmetrics' custom ``feature=`` module expects."""

    def __init__(self, backbone: torch.nn.Module, index: int, num_features: int):
        super().__init__()
        self.backbone, self.index, self.num_features = backbone, index, num_features

    def forward(self, x):
        return self.backbone(x)[self.index]


def batches(images: torch.Tensor, batch_size: int):
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


class Clock:
    """Wall and process CPU seconds since start (CPU time is the steadier figure on a shared box)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        now_wall, now_cpu = time.perf_counter(), time.process_time()
        out = (now_wall - self.wall, now_cpu - self.cpu)
        self.wall, self.cpu = now_wall, now_cpu
        return out


def fastest(best: dict | None, run: dict) -> dict:
    return run if best is None or run["total_s"] < best["total_s"] else best


def timings(extract, metrics) -> dict:
    return {
        "extract_s": extract[0],
        "metrics_s": metrics[0],
        "total_s": extract[0] + metrics[0],
        "extract_cpu_s": extract[1],
        "metrics_cpu_s": metrics[1],
        "total_cpu_s": extract[1] + metrics[1],
    }


def run_ours(model, real, fake, batch_size, splits, device):
    clock = Clock()
    with torch.inference_mode():
        real_feats = torch.cat([model(b.to(device))[0].cpu() for b in batches(real, batch_size)])
        fake_feats, fake_logits = [], []
        for b in batches(fake, batch_size):
            pool, logits = model(b.to(device))
            fake_feats.append(pool.cpu())
            fake_logits.append(logits.cpu())
    extract = clock.lap()
    fid_value = fid(real_feats, torch.cat(fake_feats))
    is_mean, is_std = inception_score_from_logits(torch.cat(fake_logits), splits=splits, seed=0)
    return {**timings(extract, clock.lap()), "fid": fid_value, "is": (is_mean, is_std)}


def torchmetrics_pair(fid_module, is_module, splits):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        # "InceptionScore will save all extracted features in buffer": known, and what we measure.
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        return FrechetInceptionDistance(feature=fid_module), InceptionScore(feature=is_module, splits=splits)


def run_torchmetrics(model, real, fake, batch_size, splits, device):
    fid_module, is_module = Select(model, 0, model.fc.in_features), Select(model, 1, model.fc.out_features)
    fid_metric, is_metric = (m.to(device) for m in torchmetrics_pair(fid_module, is_module, splits))
    clock = Clock()
    with torch.inference_mode():
        for b in batches(real, batch_size):
            fid_metric.update(b.to(device), real=True)
        for b in batches(fake, batch_size):
            b = b.to(device)
            fid_metric.update(b, real=False)
            is_metric.update(b)
    extract = clock.lap()
    torch.manual_seed(0)  # torchmetrics shuffles the IS splits with the global RNG
    fid_value = float(fid_metric.compute())
    is_mean, is_std = (float(v) for v in is_metric.compute())
    return {**timings(extract, clock.lap()), "fid": fid_value, "is": (is_mean, is_std)}


def bench_images(args, device) -> dict:
    model = (SmallBackbone(seed=0) if args.backbone == "small" else random_inception(seed=0)).to(device)
    g = torch.Generator().manual_seed(1)
    shape = (3, args.image_size, args.image_size)
    real = torch.randint(0, 256, (args.n_images, *shape), generator=g, dtype=torch.uint8)
    # A darker "generator" so that the two sets differ (FID well away from 0).
    fake = (torch.randint(0, 256, (args.n_images, *shape), generator=g, dtype=torch.uint8) // 2).to(torch.uint8)
    with torch.inference_mode():
        model(real[: args.batch_size].to(device))  # warm-up: kernel selection, allocations
    # Alternate the sides and keep each one's fastest run: less bias from whatever else the
    # machine is doing at the moment.
    ours = ref = None
    for _ in range(args.repeats):
        ours = fastest(ours, run_ours(model, real, fake, args.batch_size, args.splits, device))
        ref = fastest(ref, run_torchmetrics(model, real, fake, args.batch_size, args.splits, device))
    return {"backbone": args.backbone, "n_images": 2 * args.n_images, "ours": ours, "torchmetrics": ref}


class Identity(torch.nn.Module):
    """Precomputed features in, the same features out: torchmetrics' metrics on given features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


def bench_features(args, device) -> dict:
    """IS + FID from precomputed features at realistic sizes (full-rank 2048-D covariances)."""
    g = torch.Generator().manual_seed(3)
    n, d, k = args.feat_n, args.feat_dim, args.num_classes
    # Rectified, correlated features like pool3 activations; logits with a spread of confidences.
    mix = torch.randn(d, d, generator=g) / d**0.5
    real = torch.relu(torch.randn(n, d, generator=g) @ mix + 0.3).to(device)
    fake = torch.relu(torch.randn(n, d, generator=g) @ mix * 1.1 + 0.25).to(device)
    logits = (torch.randn(n, k, generator=g) * 3).to(device)

    clock = Clock()
    ours = {"fid": fid(real, fake), "is": inception_score_from_logits(logits, splits=args.splits, seed=0)}
    ours_s, ours_cpu = clock.lap()
    fid_metric, is_metric = (m.to(device) for m in torchmetrics_pair(Identity(d), Identity(k), args.splits))
    clock = Clock()
    for start in range(0, n, 1024):
        fid_metric.update(real[start : start + 1024], real=True)
        fid_metric.update(fake[start : start + 1024], real=False)
        is_metric.update(logits[start : start + 1024])
    torch.manual_seed(0)
    ref = {"fid": float(fid_metric.compute()), "is": tuple(float(v) for v in is_metric.compute())}
    ref_s, ref_cpu = clock.lap()
    return {
        "n": n,
        "dim": d,
        "classes": k,
        "ours_s": ours_s,
        "ours_cpu_s": ours_cpu,
        "ref_s": ref_s,
        "ref_cpu_s": ref_cpu,
        "ours": ours,
        "torchmetrics": ref,
    }


def bench_prdc(args) -> dict:
    import prdc as prdc_package

    rng = np.random.default_rng(2)
    real = rng.standard_normal((args.prdc_n, args.prdc_dim)).astype(np.float32)
    fake = (rng.standard_normal((args.prdc_n, args.prdc_dim)) * 1.05 + 0.05).astype(np.float32)
    clock = Clock()
    ours = compute_prdc(torch.from_numpy(real), torch.from_numpy(fake), args.k)
    ours_s, ours_cpu = clock.lap()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the sample counts
        ref = prdc_package.compute_prdc(real, fake, args.k)
    # prdc's sklearn call asks for n_jobs=8 worker processes, whose CPU time process_time()
    # does not see: compare wall time only.
    prdc_s, _ = clock.lap()
    return {
        "n": args.prdc_n,
        "dim": args.prdc_dim,
        "k": args.k,
        "ours_s": ours_s,
        "ours_cpu_s": ours_cpu,
        "prdc_s": prdc_s,
        "ours": ours,
        "prdc": {key: float(v) for key, v in ref.items()},
    }


def _row(label: str, ours_s: float, ref_s: float, items: int | None, ours_cpu=None, ref_cpu=None) -> str:
    rates = f"{items / ours_s:>10.1f}{items / ref_s:>10.1f}" if items else f"{'':>10}{'':>10}"
    cpu = f"{ours_cpu:>10.2f}" if ours_cpu is not None else f"{'':>10}"
    cpu += f"{ref_cpu:>9.2f}{ref_cpu / ours_cpu:>7.2f}" if ref_cpu is not None else ""
    return f"{label:<40}{ours_s:>9.3f}{ref_s:>9.3f}{rates}{ref_s / ours_s:>7.2f}{cpu}"


def _fid_is_values(where: str, ours: dict, ref: dict) -> str:
    rel = abs(ours["fid"] - ref["fid"]) / max(abs(ref["fid"]), 1e-300)
    return (
        f"values {where}: FID ours {ours['fid']:.10g} torchmetrics {ref['fid']:.10g} (rel diff {rel:.1e}); "
        f"IS ours {ours['is'][0]:.6g}+-{ours['is'][1]:.3g} torchmetrics {ref['is'][0]:.6g}+-{ref['is'][1]:.3g}"
    )


def render(images: dict | None, features: dict | None, prdc: dict | None) -> str:
    rows = [f"{'task':<40}{'ours s':>9}{'ref s':>9}{'ours /s':>10}{'ref /s':>10}{'ratio':>7}{'ours cpu':>10}{'ref cpu':>9}{'ratio':>7}"]
    if images:
        n, o, r = images["n_images"], images["ours"], images["torchmetrics"]
        for label, key, items in (
            (f"IS+FID end to end ({images['backbone']})", "total", n),
            ("  feature extraction", "extract", n),
            ("  IS+FID from features", "metrics", None),
        ):
            rows.append(_row(label, o[f"{key}_s"], r[f"{key}_s"], items, o[f"{key}_cpu_s"], r[f"{key}_cpu_s"]))
    if features:
        f = features
        rows.append(_row(f"IS+FID from features {f['n']}x{f['dim']}", f["ours_s"], f["ref_s"], f["n"], f["ours_cpu_s"], f["ref_cpu_s"]))
    if prdc:
        n = prdc["n"]
        rows.append(
            _row(f"PRDC {n}x{n}, {prdc['dim']}-D, k={prdc['k']} vs prdc", prdc["ours_s"], prdc["prdc_s"], 2 * n, prdc["ours_cpu_s"])
        )
    rows.append(
        "(s = wall seconds, cpu = process CPU seconds, /s = images or points per second; "
        "ratio = reference / ours, > 1 means ours is faster; reference = torchmetrics or prdc)"
    )
    if images:
        rows.append(
            _fid_is_values("(images)", images["ours"], images["torchmetrics"])
            + " -- torchmetrics cuts and shuffles splits differently, softmax in float32, sample std"
        )
    if features:
        rows.append(_fid_is_values(f"({features['n']}x{features['dim']})", features["ours"], features["torchmetrics"]))
    if prdc:
        rows.append(
            "values (PRDC): ours "
            + ", ".join(f"{k} {v:.6g}" for k, v in prdc["ours"].items())
            + " | prdc "
            + ", ".join(f"{k} {v:.6g}" for k, v in prdc["prdc"].items())
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="seconds-long CI version: small random CNN backbone, 64 images per set, features 400x32, PRDC 300x300x16",
    )
    parser.add_argument("--backbone", choices=("inception", "small"), default="inception")
    parser.add_argument("--n-images", type=int, default=64, help="images per set (real and fake)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--feat-n", type=int, default=10000, help="samples per set for IS+FID from features")
    parser.add_argument("--feat-dim", type=int, default=2048)
    parser.add_argument("--num-classes", type=int, default=1008)
    parser.add_argument("--prdc-n", type=int, default=10000)
    parser.add_argument("--prdc-dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="runs per side in the image section (fastest kept)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--skip-prdc", action="store_true")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.backbone, args.n_images, args.batch_size, args.splits, args.repeats = "small", 64, 32, 4, 2
        args.feat_n, args.feat_dim, args.num_classes = 400, 32, 10
        args.prdc_n, args.prdc_dim = 300, 16

    images = None if args.skip_images else bench_images(args, torch.device(args.device))
    features = None if args.skip_features else bench_features(args, torch.device(args.device))
    prdc = None if args.skip_prdc else bench_prdc(args)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    print(render(images, features, prdc))
    if args.json:
        from gancore.io import write_json

        write_json(
            args.json, {"device": args.device, "threads": torch.get_num_threads(), "images": images, "features": features, "prdc": prdc}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
