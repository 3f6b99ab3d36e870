"""Exact (Clopper–Pearson) binomial confidence intervals: a leaderboard convenience, not the test.

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_stats.py``.
"""

from __future__ import annotations

from scipy.stats import beta

from foundry_core.errors import DataError


def clopper_pearson(successes: int, n: int, confidence: float = 0.9) -> tuple[float, float]:
    """Two-sided exact interval for a binomial rate; (0, 1) when n = 0 (equals scipy's binomtest CI)."""
    if n < 0 or successes < 0 or successes > n:
        raise DataError(f"clopper_pearson: need 0 ≤ successes ≤ n, got {successes}/{n}")
    if not 0 < confidence < 1:
        raise DataError(f"clopper_pearson: confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(beta.ppf(a / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - a / 2, successes + 1, n - successes))
    return lo, hi
