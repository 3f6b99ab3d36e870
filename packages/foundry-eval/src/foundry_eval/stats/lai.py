"""Lai's sequential GLR test for long horizons (T. L. Lai, 1988, Ann. Statist. 16, "Nearly optimal
sequential tests of composite hypotheses"), used above n_max = 500 where STEP synthesis is too costly
(always the case for cross-task aggregates). Same interface and decisions as ``StepTest``.

After pair n the one-sided statistic is the binomial generalized likelihood ratio
Λ_n = Σ_i n·KL(p̂_i ‖ p̄) over both policies (p̄ pooled), taken when p̂1 > p̂0. The test rejects H0: p0 ≥ p1
at the first n > d (the STEP dead time) with Λ_n ≥ a + g(n/N), where g(t) = log(1/t) + ½·log max(1, log(1/t))
is the small-t form of Lai's time-varying boundary and the constant a is calibrated so that, under the
normal approximation Λ_n ≈ S_n²/(2n) of the null boundary p0 = p1, the probability of ever crossing is α.
The crossing probability is computed exactly for the discretely monitored Gaussian random walk by a
density recursion on a grid (no simulation noise), and cached per (N, α, d).

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_stats.py``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.special import xlogy
from scipy.stats import norm

from foundry_core.errors import ConfigError
from foundry_eval.stats.step import (
    P0_GREATER,
    P0_LESS,
    UNDECIDED,
    SequentialResult,
    cache_dir,
    check_pairs,
    dead_time,
)

#: Horizons above this use Lai's test instead of STEP (configurable where it is used).
LAI_THRESHOLD = 500


def lai_shape(t: np.ndarray) -> np.ndarray:
    """g(t) for t = n/N in (0, 1]: large early (few data), 0 at the horizon."""
    lt = np.log(1.0 / t)
    return lt + 0.5 * np.log(np.maximum(1.0, lt))


def crossing_probability(a: float, n_max: int, d: int, h: float = 0.5) -> float:
    """P(∃ n ∈ (d, N]: S_n ≥ √(2n(a + g(n/N)))) for a standard Gaussian random walk S."""
    n = np.arange(1, n_max + 1)
    bound = np.sqrt(2 * n * (a + lai_shape(n / n_max)))
    lo_i = -int(math.ceil(8 * math.sqrt(n_max) / h))
    hi_i = int(math.ceil(bound.max() / h)) + 1
    grid = h * np.arange(lo_i, hi_i + 1)
    kw = int(math.ceil(7 / h))
    ks = h * np.arange(-kw, kw + 1)
    w = norm.cdf(ks + h / 2) - norm.cdf(ks - h / 2)
    f = np.zeros(len(grid))
    f[-lo_i] = 1.0
    crossed = 0.0
    for i in range(n_max):
        f = np.convolve(f, w, mode="same")
        if i + 1 > d:
            cut = int(np.searchsorted(grid, bound[i]))
            crossed += float(f[cut:].sum())
            f[cut:] = 0.0
    return crossed


def calibrate(n_max: int, alpha: float) -> float:
    """The constant a giving one-sided type-I error α (cached on disk as JSON)."""
    d = dead_time(n_max)
    path = cache_dir().parent / "lai" / f"lai_n{n_max}_a{alpha!r}_d{d}_v1.json"
    if path.exists():
        try:
            return float(json.loads(path.read_text())["a"])
        except (OSError, ValueError, KeyError):
            pass

    def gap(a: float) -> float:
        return math.log(crossing_probability(a, n_max, d)) - math.log(alpha)

    lo, hi = max(0.0, math.log(1 / alpha) - 3), math.log(1 / alpha) + 3  # a ≈ log(1/α) - 0.6 in practice
    if gap(lo) < 0 or gap(hi) > 0:
        lo, hi = 0.0, 60.0
    xtol = 1e-3
    a = brentq(gap, lo, hi, xtol=xtol) + xtol  # the crossing probability falls with a: stay on the safe side
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"a": a, "n_max": n_max, "alpha": alpha, "dead_time": d}, f)
    os.replace(tmp, path)
    return a


def glr(x: np.ndarray, y: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Binomial GLR statistic of H: p0 = p1 after n pairs with x, y successes."""
    p0, p1, pb = x / n, y / n, (x + y) / (2 * n)

    def ll(s, p):
        return xlogy(s, p) + xlogy(n - s, 1 - p)

    return ll(x, p0) + ll(y, p1) - ll(x, pb) - ll(y, pb)


class LaiTest:
    """Two-sided Lai test: one-sided at ``alpha`` in each direction (``conservative`` halves it)."""

    def __init__(self, n_max: int, alpha: float = 0.05, *, conservative: bool = False) -> None:
        if n_max < 5 or not 0 < alpha < 0.5:
            raise ConfigError(f"Lai test needs n_max ≥ 5 and 0 < alpha < 0.5, got {n_max}, {alpha}")
        self.n_max, self.alpha = n_max, alpha / 2 if conservative else alpha
        self.d = dead_time(n_max)
        self.a = calibrate(n_max, self.alpha)

    def run(self, d0: Sequence[int] | np.ndarray, d1: Sequence[int] | np.ndarray) -> SequentialResult:
        a0, a1 = check_pairs(d0, d1)
        if len(a0) > self.n_max:
            raise ConfigError(f"{len(a0)} pairs exceed the Lai horizon n_max={self.n_max} fixed in advance")
        n = np.arange(1, len(a0) + 1)
        x, y = np.cumsum(a0), np.cumsum(a1)
        cross = (glr(x, y, n) >= self.a + lai_shape(n / self.n_max)) & (n > self.d)
        hit = np.flatnonzero(cross & (x != y))
        if not len(hit):
            return SequentialResult(UNDECIDED, len(a0), "lai")
        i = int(hit[0])
        return SequentialResult(P0_LESS if y[i] > x[i] else P0_GREATER, i + 1, "lai")
