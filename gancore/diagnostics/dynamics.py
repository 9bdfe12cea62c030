"""Training dynamics read from ``metrics/train_log.csv``: equilibrium, dominance, vanishing
gradients, oscillation and batch-norm drift.

Each check returns its numbers and a boolean ``flag`` (``None`` where the check does not apply or
the log is too short to judge). Windows are fractions of the steps trained, so the checks read the
same on a 300-step toy run and a 100k-step image run: the log is read on a regular grid of steps
first (each grid step takes the last row logged at or before it), since rows need not be evenly
spaced (``train.log_every`` may change on a resume; the monitor adds rows of its own), and a
window of rows would then cover other steps than it claims.

Which checks apply to which loss: D(x) = D(G(z)) = 1/2 and V = -log 4 is the Nash equilibrium of
the game whose discriminator is a sigmoid classifier trained on V (Goodfellow 2014). That holds
for ``minimax`` and ``non_saturating`` (both train D on V; only G's objective differs). For
hinge, least-squares and Wasserstein critics the logged "probabilities" are sigmoids of unbounded
scores whose equilibrium value is not 0 (least squares: 1/2 raw, i.e. sigmoid 0.62; hinge and
WGAN: any constant), so the equilibrium, far-from-equilibrium and dominance checks report their
numbers with ``flag = None``. So do vanishing gradients and oscillation: the gradient-norm collapse
is measured for every loss, but it is the saturating loss's failure only where it coincides with a
D that rejects the samples, D(G(z)) near 0, which needs a sigmoid D (a least-squares G's gradient
vanishes when G wins; a hinge or Wasserstein G's objective is linear in D's score); and the
oscillation's 0.1 is a swing of a probability, not of a score on an arbitrary scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gancore import trainlog
from gancore.errors import EvaluationError
from gancore.losses import is_sigmoid

REQUIRED = ("step", "loss_d", "loss_g", "d_real", "d_fake", "value", "grad_norm_g")

LOG4 = math.log(4.0)
# "Late" and "early" are the last and first 20 % of the rows: long enough to average minibatch
# noise, short enough that the late window describes where training ended up.
WINDOW_FRACTION = 0.2
# Below this many rows the early and late windows overlap; trend checks are then not judged.
MIN_ROWS = 5
# |mean D - 1/2| within 0.1: batch means of D over a few hundred samples move by ~0.02, and GAN
# dynamics orbit the fixed point; a D that is right 60 % of the time on both sides is the edge.
EQUILIBRIUM_TOL = 0.1
# The change of V when D(x) and 1 - D(G(z)) both move EQUILIBRIUM_TOL away from 1/2:
# 2 |log(0.4) - log(0.5)| = 0.446. Keeps the V test consistent with the D test.
VALUE_TOL = 2.0 * abs(math.log(0.5 - EQUILIBRIUM_TOL) - math.log(0.5))
# Beyond 0.35 from 1/2 (D(x) > 0.85 or D(G(z)) < 0.15) D separates the two sets confidently: the
# generator's distribution is still far from the data's. Wider than EQUILIBRIUM_TOL on purpose:
# well-trained image GANs commonly sit at D(x) ~ 0.7, D(G(z)) ~ 0.3 without being broken.
FAR_TOL = 0.35
# Dominance: D calls real data real and generated data fake with > 90 % confidence on average.
D_REAL_HIGH = 0.9
D_FAKE_LOW = 0.1
# The saturating G loss log(1 - D(G(z))) has logit gradient -D(G(z)): at D(G(z)) <= 0.1 it is
# 5x weaker than at equilibrium, so D_FAKE_LOW doubles as the "near 0" bound for vanishing.
# A collapse is the late median of ||grad G|| below a tenth (an order of magnitude) of its peak
# window median.
GRAD_COLLAPSE_RATIO = 0.1
# Oscillation on D(G(z)) in the late window after removing a linear trend: a standard deviation of
# 0.1 (a swing of about +-0.14 for a sine) is 5x the minibatch noise of D, and at least 4 sign
# changes (two full cycles) separate a cycle from a trend the line did not capture.
OSCILLATION_STD = 0.1
OSCILLATION_MIN_SIGN_CHANGES = 4
# BN running means still moving > 5 % per log interval late in training, and not down to half their
# early drift: the activations' statistics have not settled (internal covariate shift).
BN_DRIFT_HIGH = 0.05
BN_DRIFT_SETTLED_RATIO = 0.5


def read_train_log(path: str | Path) -> dict[str, np.ndarray] | None:
    """The training log as float64 columns (empty cells -> NaN); ``None`` if the file is absent."""
    try:
        return trainlog.read_columns(path, REQUIRED)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None


# The grid of steps the log is read on has at most this many points per logged row (a log that was
# dense for a few steps and sparse after would otherwise make a grid far longer than the log).
GRID_PER_ROW = 4


def on_step_grid(log: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``log`` on a regular grid of steps, at the typical spacing of its rows (their median gap):
    each grid step takes the last row logged at or before it, so that a fraction of the rows is
    the same fraction of the steps."""
    steps = log["step"]
    gaps = np.diff(steps)
    gaps = gaps[gaps > 0]
    if len(steps) < 2 or not gaps.size:
        return dict(log)
    span = float(steps[-1] - steps[0])
    spacing = max(float(np.median(gaps)), span / (GRID_PER_ROW * len(steps)))
    grid = steps[0] + spacing * np.arange(int(span / spacing + 1e-9) + 1)
    rows = np.searchsorted(steps, grid + 1e-9 * spacing, side="right") - 1
    if grid[-1] < steps[-1]:  # the last row is where training ended: always read
        grid, rows = np.append(grid, steps[-1]), np.append(rows, len(steps) - 1)
    return {**{k: v[rows] for k, v in log.items()}, "step": grid}


def _window(n: int) -> int:
    return max(1, min(n, math.ceil(WINDOW_FRACTION * n)))


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def _median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def _equilibrium(late: Mapping[str, np.ndarray], sigmoid: bool, use_value: bool) -> dict[str, Any]:
    d_real, d_fake, value = _mean(late["d_real"]), _mean(late["d_fake"]), _mean(late["value"])
    distance = None if d_real is None or d_fake is None else max(abs(d_real - 0.5), abs(d_fake - 0.5))
    near = None
    if sigmoid and distance is not None:
        near = distance <= EQUILIBRIUM_TOL
        if use_value and value is not None:
            near = near and abs(value + LOG4) <= VALUE_TOL
    return {
        "applicable": sigmoid,
        "d_real_mean": d_real,
        "d_fake_mean": d_fake,
        "value_mean": value,
        "value_target": -LOG4,
        "value_gap": None if value is None else value + LOG4,
        "value_checked": sigmoid and use_value,
        "tolerance": EQUILIBRIUM_TOL,
        "value_tolerance": VALUE_TOL,
        "distance": distance,
        "flag": near,
        "far_tolerance": FAR_TOL,
        "far_flag": None if not sigmoid or distance is None else distance > FAR_TOL,
    }


def _dominance(late: Mapping[str, np.ndarray], sigmoid: bool) -> dict[str, Any]:
    d_real, d_fake = _mean(late["d_real"]), _mean(late["d_fake"])
    flag = None
    if sigmoid and d_real is not None and d_fake is not None:
        flag = d_real >= D_REAL_HIGH and d_fake <= D_FAKE_LOW
    return {"d_real_mean": d_real, "d_fake_mean": d_fake, "d_real_high": D_REAL_HIGH, "d_fake_low": D_FAKE_LOW, "flag": flag}


def _vanishing(log: Mapping[str, np.ndarray], w: int, sigmoid: bool) -> dict[str, Any]:
    g = log["grad_norm_g"]
    n = len(g)
    out: dict[str, Any] = {"ratio_threshold": GRAD_COLLAPSE_RATIO, "d_fake_low": D_FAKE_LOW, "d_fake_checked": sigmoid, "flag": None}
    d_fake = _mean(log["d_fake"][-w:])
    late = _median(g[-w:])
    if n >= MIN_ROWS:
        # The reference is the largest window median anywhere: "early" when gradients start high,
        # the peak when they grow first and collapse later.
        medians = np.nanmedian(np.lib.stride_tricks.sliding_window_view(g, w), axis=1)
        medians = medians[np.isfinite(medians)]
        reference = float(medians.max()) if medians.size else None
    else:
        reference = None
    ratio = late / reference if late is not None and reference else None
    out.update(d_fake_late=d_fake, grad_norm_g_late_median=late, grad_norm_g_reference_median=reference, grad_ratio=ratio)
    if ratio is not None:
        collapsed = ratio <= GRAD_COLLAPSE_RATIO
        out["grad_collapsed"] = collapsed
        out["flag"] = collapsed and d_fake is not None and d_fake <= D_FAKE_LOW if sigmoid else None
    return out


def _sign_changes(x: np.ndarray) -> int:
    s = np.sign(x[x != 0])
    return int((s[1:] != s[:-1]).sum())


def _detrend(y: np.ndarray) -> np.ndarray:
    t = np.arange(len(y), dtype=np.float64)
    slope, intercept = np.polyfit(t, y, 1)
    return y - (slope * t + intercept)


def _oscillation(late: Mapping[str, np.ndarray], sigmoid: bool) -> dict[str, Any]:
    y = late["d_fake"][np.isfinite(late["d_fake"])]
    out: dict[str, Any] = {
        "series": "d_fake",
        "std_threshold": OSCILLATION_STD,
        "min_sign_changes": OSCILLATION_MIN_SIGN_CHANGES,
        "flag": None,
    }
    lg = late["loss_g"][np.isfinite(late["loss_g"])]
    out["loss_g_relative_std"] = float(lg.std() / abs(lg.mean())) if lg.size > 1 and abs(lg.mean()) > 1e-12 else None
    if y.size < MIN_ROWS:
        out.update(detrended_std=None, sign_changes=None)
        return out
    r = _detrend(y)
    std, changes = float(r.std()), _sign_changes(r)
    swings = std >= OSCILLATION_STD and changes >= OSCILLATION_MIN_SIGN_CHANGES
    out.update(detrended_std=std, sign_changes=changes, flag=swings if sigmoid else None)
    return out


def _bn_drift(log: Mapping[str, np.ndarray], w: int) -> dict[str, Any] | None:
    if "bn_drift_g" not in log:
        return None
    x = log["bn_drift_g"]
    finite = x[np.isfinite(x)]
    if finite.size < MIN_ROWS:
        return None
    wb = _window(finite.size)
    early, late = float(finite[:wb].mean()), float(finite[-wb:].mean())
    ratio = late / early if early > 0 else None
    settled = ratio is not None and ratio < BN_DRIFT_SETTLED_RATIO
    return {
        "early_mean": early,
        "late_mean": late,
        "late_to_early": ratio,
        "high_threshold": BN_DRIFT_HIGH,
        "settled_ratio": BN_DRIFT_SETTLED_RATIO,
        "flag": bool(late >= BN_DRIFT_HIGH and not settled),
    }


# The checks whose flag is a problem; a mixture has it when any part has it.
PART_CHECKS = ("dominance", "vanishing_gradients", "oscillation", "bn_drift")


def with_parts(mixture: dict[str, Any] | None, parts: list[tuple[int, dict[str, Any]]]) -> dict[str, Any] | None:
    """A mixture's dynamics: those of its averaged log (``mixture``), where a problem of one part
    can average away (two parts oscillating out of phase; one dominant D beside a healthy one), so
    each check a part flags and the average does not is that part's, with ``part`` its index."""
    if mixture is None:
        return None
    out = dict(mixture)
    for check in PART_CHECKS:
        if (out.get(check) or {}).get("flag"):
            continue
        flagged = [(index, found[check]) for index, found in parts if (found.get(check) or {}).get("flag")]
        if flagged:
            index, figures = flagged[0]
            out[check] = {**figures, "part": index, "parts_flagged": [i for i, _ in flagged]}
    return out


def analyse_dynamics(log: Mapping[str, np.ndarray], loss: str) -> dict[str, Any]:
    """Every check on a training log (columns as from :func:`read_train_log`) for loss ``loss``."""
    if len(log["step"]) == 0:
        raise EvaluationError("the training log has a header but no rows; train for at least one log interval")
    rows = len(log["step"])
    log = on_step_grid(log)
    n = len(log["step"])
    w = _window(n)
    late = {k: v[-w:] for k, v in log.items()}
    sigmoid = is_sigmoid(loss)
    return {
        "loss": loss,
        "rows": rows,
        "grid_points": n,
        "window_rows": w,
        "last_step": float(log["step"][-1]),
        "equilibrium": _equilibrium(late, sigmoid, use_value=True),
        "dominance": _dominance(late, sigmoid),
        "vanishing_gradients": _vanishing(log, w, sigmoid),
        "oscillation": _oscillation(late, sigmoid),
        "bn_drift": _bn_drift(log, w),
    }
