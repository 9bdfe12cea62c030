"""Constructed inputs the diagnostics tests share, whose answers are known analytically: the ring8
protocol's mixture, binomial and KL tolerances, training logs, and the 2D diagnosis of a sample."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from gancore.diagnostics import figures_from
from gancore.diagnostics.diversity import collapse_measures
from gancore.diagnostics.dynamics import analyse_dynamics
from gancore.diagnostics.modes import modes_2d
from gancore.diagnostics.ndb import ndb
from gancore.diagnostics.verdict import decide
from gancore.gaussian_mixture import GaussianMixture

# P(r < 3 sigma) for an isotropic 2D Gaussian: the radius is Rayleigh, 1 - exp(-9/2).
P_HQ = 1.0 - math.exp(-4.5)
N = 2500  # the 2D protocol's sample count


def ring8() -> tuple[torch.Tensor, float]:
    a = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    return torch.stack([a.cos(), a.sin()], 1), 0.01


def mixture(centers: torch.Tensor, sigma: float, n: int, seed: int, modes=None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    modes = torch.as_tensor(modes if modes is not None else range(len(centers)))
    labels = modes[torch.randint(len(modes), (n,), generator=g)]
    return (centers[labels] + sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)).float(), labels


def binomial_tol(p: float, n: int, sds: float = 4.0) -> float:
    return sds * math.sqrt(p * (1 - p) / n)


def kl_bound(k: int, n: int) -> float:
    """99.9 % bound on KL(empirical || true) for n multinomial draws over k equal bins: 2n KL ~ chi2(k-1)."""
    return stats.chi2.ppf(0.999, k - 1) / (2 * n)


# -- training logs ------------------------------------------------------------------------------
def make_log(d_real, d_fake, grad_g, bn=None, loss_g=None) -> dict[str, np.ndarray]:
    d_real, d_fake, grad_g = (np.asarray(x, dtype=np.float64) for x in (d_real, d_fake, grad_g))
    n = len(d_real)
    value = np.log(d_real) + np.log1p(-d_fake)
    log = {
        "step": np.arange(1, n + 1, dtype=np.float64) * 10,
        "loss_d": -value,
        "loss_g": -np.log(d_fake) if loss_g is None else np.asarray(loss_g, dtype=np.float64),
        "d_real": d_real,
        "d_fake": d_fake,
        "logit_real": np.log(d_real / (1 - d_real)),
        "logit_fake": np.log(d_fake / (1 - d_fake)),
        "value": value,
        "grad_norm_g": grad_g,
        "grad_norm_d": grad_g,
        "bn_drift_g": np.full(n, np.nan) if bn is None else np.asarray(bn, dtype=np.float64),
        "seconds": np.arange(n, dtype=np.float64),
    }
    return log


def healthy_log(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return make_log(
        0.5 + 0.02 * rng.standard_normal(n),
        0.5 + 0.02 * rng.standard_normal(n),
        1.0 + 0.1 * rng.standard_normal(n),
        bn=0.2 * np.exp(-np.arange(n) / 30) + 0.01,
    )


def diagnosis_2d(gen, centers, sigma, real_train, real_test, real_labels=None, log=None, loss="non_saturating", bins=100):
    report = modes_2d(gen, centers, sigma, real_labels=real_labels)
    figures = figures_from(report, collapse_measures(gen, real_test, 0.05, seed=0), ndb(real_train, gen, bins, 0.05, seed=0))
    dynamics = analyse_dynamics(log, loss) if log is not None else None
    return report, figures, decide(figures, dynamics, loss)


# -- Gaussian mixtures in any dimension (a points file's fitted modes) ------------------------------
def mixture_draw(mixture: GaussianMixture, n: int, seed: int) -> torch.Tensor:
    """``n`` float64 rows drawn from a diagonal ``GaussianMixture``."""
    gen = torch.Generator().manual_seed(seed)
    parts = torch.multinomial(mixture.weights, n, replacement=True, generator=gen)
    noise = torch.randn(n, mixture.means.shape[1], generator=gen, dtype=torch.float64)
    return mixture.means[parts] + noise * mixture.variances[parts].sqrt()


def two_gaussians(dims: int, separation: float, weights: tuple[float, float], variances: tuple[float, float]) -> GaussianMixture:
    """Two diagonal Gaussians ``separation`` apart along the first axis."""
    means = torch.zeros(2, dims, dtype=torch.float64)
    means[1, 0] = separation
    var = torch.tensor(variances, dtype=torch.float64)[:, None].expand(2, dims).clone()
    return GaussianMixture(torch.tensor(weights, dtype=torch.float64), means, var, 0.0, 0)
