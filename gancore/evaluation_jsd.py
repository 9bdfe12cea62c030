"""Jensen-Shannon divergence estimated by a freshly trained discriminator.

Goodfellow et al. (2014, Thm. 1): for a fixed generator the best discriminator reaches
``max_D V(D, G) = -log 4 + 2 JSD(p_data || p_g)``, with
``V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]``. So ``(V(D_hat) + log 4) / 2`` for any
trained ``D_hat`` evaluated on held-out data estimates a *lower bound* on the JSD: a sub-optimal
discriminator can only lose value. Because ``log D <= 0`` the estimate never exceeds ``log 2``, and
it is clipped below at 0 (a discriminator worse than the constant 1/2 carries no information).

The discriminator sees classifier features, not raw data. A feature map ``f`` can only lose
information, so ``JSD(f#p_data || f#p_g) <= JSD(p_data || p_g)`` (data-processing inequality): the
estimate stays a lower bound on the JSD between the data distributions.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:  # pragma: no cover
    from gancore.metrics.inputs import MetricInputs

LOG4 = math.log(4.0)


@dataclass(frozen=True)
class JSDEstimate:
    js_lower_bound: float  # max(0, (v_hat + log 4) / 2), nats, in [0, log 2]
    v_hat: float  # V(D_hat) on the held-out halves
    se: float  # standard error of the JSD estimate from the held-out sample (D_hat fixed)
    n_train: int  # per class (real and generated each)
    n_test: int  # per class

    def as_dict(self, prefix: str = "js_lower_bound") -> dict[str, float | int]:
        d = asdict(self)
        return {
            prefix: d["js_lower_bound"],
            f"{prefix}_v_hat": d["v_hat"],
            f"{prefix}_se": d["se"],
            f"{prefix}_n_train": d["n_train"],
            f"{prefix}_n_test": d["n_test"],
        }


def _value(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    with torch.no_grad():
        return float(-F.softplus(-disc(real)).mean() - F.softplus(disc(fake)).mean())


def _as_2d(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    return x.reshape(len(x), -1)


def js_lower_bound(
    real,
    fake,
    *,
    seed: int = 0,
    steps: int = 400,
    hidden: int = 128,
    lr: float = 1e-3,
    batch_size: int = 256,
    max_per_class: int = 5000,
    eval_every: int = 20,
) -> JSDEstimate:
    """Estimate of a lower bound on JSD(real || fake), in nats, from a freshly trained MLP discriminator.

    Returns ``max(0, (V(D_hat) + log 4) / 2)``: a *lower bound* because ``D_hat`` is at best
    the optimal discriminator (any sub-optimal D loses value), and at most ``log 2`` because
    ``V <= 0``. It is an estimate: ``se`` is the standard error of the held-out ``V`` for the
    kept discriminator, so the bound can exceed the true JSD by a few ``se``.

    ``real`` and ``fake`` are ``[N, ...]`` arrays of features. Both sets are cut to the same size
    ``n = min(len(real), len(fake), max_per_class)`` by a seeded draw, so the classes are
    balanced (the identity assumes equal priors). The first half of each trains the
    discriminator (real = 1, generated = 0, binary cross-entropy; a fifth of that half picks the
    stopping step); the second half, never seen in training, estimates ``V(D_hat)``.
    Deterministic for a given ``seed``; the global RNG state is left untouched. Runs on the CPU:
    a few hundred steps of a two-layer MLP cost seconds.
    """
    with _one_thread():
        return _estimate(_as_2d(real), _as_2d(fake), seed, steps, hidden, lr, batch_size, max_per_class, eval_every)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one intra-op thread: a small MLP gains nothing from more, and on a loaded machine
    every op of a multi-threaded run waits for its slowest thread (measured 6-15x slower on 2
    busy cores). The result does not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _estimate(
    real: torch.Tensor,
    fake: torch.Tensor,
    seed: int,
    steps: int,
    hidden: int,
    lr: float,
    batch_size: int,
    max_per_class: int,
    eval_every: int,
) -> JSDEstimate:
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have dimension {real.shape[1]}, generated {fake.shape[1]}")
    n = min(len(real), len(fake), max_per_class)
    if n < 4:
        raise ValueError(f"need at least 4 real and 4 generated points to train and test a discriminator, got {len(real)} and {len(fake)}")
    n_train = n // 2
    n_test = n - n_train

    g = torch.Generator().manual_seed(seed)
    real = real[torch.randperm(len(real), generator=g)[:n]]
    fake = fake[torch.randperm(len(fake), generator=g)[:n]]
    real_tr, real_te = real[:n_train], real[n_train:]
    fake_tr, fake_te = fake[:n_train], fake[n_train:]

    # Standardising with training statistics only keeps the held-out half unseen; it makes one
    # learning rate work for 2D coordinates and 2048-D Inception features alike.
    train = torch.cat([real_tr, fake_tr])
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x - mean) / std

    real_tr, fake_tr, real_te, fake_te = map(norm, (real_tr, fake_tr, real_te, fake_te))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        disc = nn.Sequential(
            nn.Linear(real.shape[1], hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )
    opt = torch.optim.Adam(disc.parameters(), lr=lr)

    # A slice of the training half picks the stopping step: with high-dimensional features an
    # MLP memorises the training points within a few hundred steps and its held-out value then
    # collapses far below -log 4. Choosing on data the final estimate never sees keeps the
    # test-half V(D_hat) an honest estimate for the discriminator that is kept.
    n_val = max(1, n_train // 5)
    n_fit = n_train - n_val
    real_fit, real_val = real_tr[:n_fit], real_tr[n_fit:]
    fake_fit, fake_val = fake_tr[:n_fit], fake_tr[n_fit:]
    b = min(batch_size, n_fit)
    target = torch.cat([torch.ones(b), torch.zeros(b)])
    best_v, best_state = _value(disc, real_val, fake_val), copy.deepcopy(disc.state_dict())
    for step in range(1, steps + 1):
        # Equal real and generated counts in every batch: the balanced prior of the identity.
        xr = real_fit[torch.randint(n_fit, (b,), generator=g)]
        xf = fake_fit[torch.randint(n_fit, (b,), generator=g)]
        logits = disc(torch.cat([xr, xf])).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            v = _value(disc, real_val, fake_val)
            if v > best_v:
                best_v, best_state = v, copy.deepcopy(disc.state_dict())
    disc.load_state_dict(best_state)

    with torch.no_grad():
        # log D = -softplus(-l), log(1 - D) = -softplus(l): exact and stable for any logit.
        log_d_real = (-F.softplus(-disc(real_te).squeeze(1))).double()
        log_1m_d_fake = (-F.softplus(disc(fake_te).squeeze(1))).double()
    v_hat = float(log_d_real.mean() + log_1m_d_fake.mean())
    se = 0.5 * math.sqrt(float(log_d_real.var(unbiased=True)) / n_test + float(log_1m_d_fake.var(unbiased=True)) / n_test)
    return JSDEstimate(max(0.0, (v_hat + LOG4) / 2), v_hat, se, n_train, n_test)


def evaluate(inputs: MetricInputs) -> dict[str, Any]:
    """The registry's adapter (:data:`gancore.figures.METRICS`)."""
    return dict(js_lower_bound(inputs.real_features, inputs.generated_features, seed=inputs.seed).as_dict())
