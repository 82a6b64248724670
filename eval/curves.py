"""Interpolation on loss curves, in log-x, never extrapolated.

Loss curves are sampled at validation steps; between two samples the loss is interpolated linearly in
log(x) (FLOPs, tokens and time all span decades). Outside the sampled range the answer is None: a
comparison says "not reached" rather than guessing.
"""
from __future__ import annotations

import numpy as np


def value_at(x: np.ndarray, y: np.ndarray, x0: float) -> float | None:
    """y at x0, linear in log(x) between the two neighbouring samples; None outside [x[0], x[-1]]."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) == 0 or not np.isfinite(x0) or x0 <= 0:
        return None
    lo, hi = x[0], x[-1]
    # A relative tolerance so that the endpoint of one curve counts as reached by an identical x.
    if x0 < lo * (1 - 1e-9) or x0 > hi * (1 + 1e-9):
        return None
    ok = np.isfinite(y)
    if not ok.any():
        return None
    return float(np.interp(np.log(min(max(x0, lo), hi)), np.log(x[ok]), y[ok]))


def x_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The first x at which the curve goes down to `target` (log-x interpolation inside the crossing
    segment); None if it never does. A curve already at or below target at its first sample returns
    that sample's x (an upper bound: the run was not evaluated earlier)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) == 0:
        return None
    if y[0] <= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] <= target:
            # y[i-1] > target >= y[i]: interpolate log(x) linearly in y within the segment
            frac = (y[i - 1] - target) / (y[i - 1] - y[i])
            lx = np.log(x[i - 1]) + frac * (np.log(x[i]) - np.log(x[i - 1]))
            return float(np.exp(lx))
    return None


def matched_budget(xa: np.ndarray, xb: np.ndarray) -> float | None:
    """The largest x both curves reached (and that lies inside both sampled ranges)."""
    if len(xa) == 0 or len(xb) == 0:
        return None
    x0 = min(xa[-1], xb[-1])
    return float(x0) if x0 >= max(xa[0], xb[0]) else None


def compute_multiplier(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray,
                       budget: float | None = None) -> dict:
    """How many times more x (FLOPs, tokens, seconds) one run needs to reach the other's loss.

    The target loss of each run is its loss at `budget` (default: its final loss); with equal budgets
    that is "the other's final loss". `a_over_b`: the x B needs to reach A's target loss divided by the
    x A needed for it (> 1: A is more efficient); None ("not reached") when B never gets there within
    its own curve. `b_over_a` is the mirror.
    """
    out: dict = {}
    for name, (xs, ys), (xo, yo) in (("a_over_b", (xa, ya), (xb, yb)), ("b_over_a", (xb, yb), (xa, ya))):
        target = float(ys[-1]) if budget is None else value_at(xs, ys, budget)
        x_self = None if target is None else x_to_reach(xs, ys, target)
        x_other = None if target is None else x_to_reach(xo, yo, target)
        out[name] = None if x_other is None or x_self is None else x_other / x_self
    return out


def mean_spread(values: list[float]) -> tuple[float, float, float]:
    """(mean, min, max) of per-seed values."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.min()), float(arr.max())


def geo_mean_spread(values: list[float]) -> tuple[float, float, float]:
    """(geometric mean, min, max): multipliers are ratios, averaged in log space."""
    arr = np.asarray(values, dtype=float)
    return float(np.exp(np.log(arr).mean())), float(arr.min()), float(arr.max())
