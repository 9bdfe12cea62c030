"""Pictures and the tidy table of the diagnosis (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gancore.io import atomic_path, save_figure
from gancore.losses import is_sigmoid

LOG4 = math.log(4.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_not_applicable(path: str | Path, title: str, reason: str) -> None:
    """A picture that says why there is nothing to show (instead of a stale one from an earlier run)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.4, f"not applicable: {reason}", ha="center", va="center", fontsize=9, wrap=True)
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def write_mode_histogram_csv(path: str | Path, labels: Sequence[str], generated: Sequence[float], real: Sequence[float]) -> None:
    """One row per mode: ``mode, generated, real`` as shares of their totals (tidy for ``dvc plots``)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["mode", "generated", "real"])
        for label, g, r in zip(labels, generated, real):
            writer.writerow([label, f"{g:.6g}", f"{r:.6g}"])


def plot_mode_histogram(path: str | Path, labels: Sequence[str], generated: Sequence[float], real: Sequence[float], title: str) -> None:
    plt = _pyplot()
    k = len(labels)
    fig, ax = plt.subplots(figsize=(max(6.0, min(0.35 * k, 14.0)), 3.6))
    x = np.arange(k)
    if k <= 60:
        ax.bar(x - 0.2, real, width=0.4, label="real", color="0.6")
        ax.bar(x + 0.2, generated, width=0.4, label="generated", color="C0")
        ax.set_xticks(x, labels, rotation=90 if k > 12 else 0, fontsize=8 if k > 12 else 10)
    else:
        # Too many modes for bars (stacked MNIST): two step lines over the mode index.
        ax.step(x, real, where="mid", label="real", color="0.5")
        ax.step(x, generated, where="mid", label="generated", color="C0", alpha=0.8)
        ax.set_xlabel("mode index")
    ax.set_ylabel("share of samples")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_dynamics(path: str | Path, log: Mapping[str, np.ndarray], loss: str) -> None:
    """D(x) and D(G(z)) with the 1/2 line; losses (and V with -log 4 for sigmoid losses); grad norms."""
    plt = _pyplot()
    step = log["step"]
    has_bn = "bn_drift_g" in log and np.isfinite(log["bn_drift_g"]).any()
    panels = 4 if has_bn else 3
    fig, axes = plt.subplots(panels, 1, figsize=(8, 2.4 * panels), sharex=True)
    ax = axes[0]
    ax.plot(step, log["d_real"], label="D(x)")
    ax.plot(step, log["d_fake"], label="D(G(z))")
    ax.axhline(0.5, color="k", ls="--", lw=1, label="equilibrium 1/2")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="best")
    ax.set_ylabel("probability")

    ax = axes[1]
    ax.plot(step, log["loss_d"], label="loss D")
    ax.plot(step, log["loss_g"], label="loss G")
    if is_sigmoid(loss):
        # D minimises -V, whose equilibrium value is log 4; V itself is logged in "value".
        ax.plot(step, log["value"], label="V(D,G)", alpha=0.7)
        ax.axhline(LOG4, color="k", ls="--", lw=1, label="log 4 (D loss at equilibrium)")
        ax.axhline(-LOG4, color="k", ls=":", lw=1, label="-log 4 (V at equilibrium)")
    ax.legend(fontsize=8, loc="best")
    ax.set_ylabel(f"loss ({loss})")

    ax = axes[2]
    for name, label in (("grad_norm_g", "||grad G||"), ("grad_norm_d", "||grad D||")):
        if name in log and np.isfinite(log[name]).any():
            ax.plot(step, log[name], label=label)
    g = log["grad_norm_g"][np.isfinite(log["grad_norm_g"])]
    if g.size and g.min() > 0:
        ax.set_yscale("log")
    ax.legend(fontsize=8, loc="best")
    ax.set_ylabel("gradient norm")

    if has_bn:
        ax = axes[3]
        ax.plot(step, log["bn_drift_g"], label="BN running-mean drift (G)")
        ax.legend(fontsize=8, loc="best")
        ax.set_ylabel("relative change")
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_ndb(path: str | Path, result: Mapping[str, Any]) -> None:
    """Reference vs generated bin proportions, different bins marked (as the NDB paper's figure)."""
    plt = _pyplot()
    ref = np.asarray(result["real_proportions"])
    gen = np.asarray(result["generated_proportions"])
    diff = np.asarray(result["different"], dtype=bool)
    k = len(ref)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = np.arange(k)
    ax.bar(x, ref, width=1.0, color="0.75", label="real")
    ax.plot(x, gen, "C0.-", ms=3, lw=0.8, label="generated")
    ax.plot(x[diff], gen[diff], "rx", label="significantly different")
    ax.set_xlabel("bin (largest real share first)")
    ax.set_ylabel("share")
    ax.set_title(f"NDB = {result['ndb']} of {k} (JS {result['ndb_js']:.4f})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
