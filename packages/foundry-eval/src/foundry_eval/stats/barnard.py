"""Barnard's exact unconditional test of two independent binomials (fixed n only), via SciPy.

Above ``exact_limit`` episodes per arm the exact test is too slow; its asymptotic form (the pooled Wald
z test, the same statistic) is used and reported as such.

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_stats.py``.
"""

from __future__ import annotations

import math

from scipy.stats import barnard_exact, norm

from foundry_core.errors import DataError

ALTERNATIVES = ("two-sided", "less", "greater")


def barnard_pvalue(
    s0: int, n0: int, s1: int, n1: int, alternative: str = "two-sided", exact_limit: int = 500
) -> tuple[float, str]:
    """p-value for H0: p0 = p1 (``less``: H1 p0 < p1). Returns (p, method name)."""
    if alternative not in ALTERNATIVES:
        raise DataError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    for s, n in ((s0, n0), (s1, n1)):
        if n <= 0 or not 0 <= s <= n:
            raise DataError(f"barnard: need 0 ≤ successes ≤ n and n > 0, got {s}/{n}")
    if max(n0, n1) <= exact_limit:
        table = [[s0, s1], [n0 - s0, n1 - s1]]
        return float(barnard_exact(table, alternative=alternative, pooled=True).pvalue), "barnard"
    pooled = (s0 + s1) / (n0 + n1)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
    if se == 0:
        return 1.0, "wald-z"
    z = (s0 / n0 - s1 / n1) / se
    p = {"two-sided": 2 * norm.sf(abs(z)), "less": norm.cdf(z), "greater": norm.sf(z)}[alternative]
    return float(min(1.0, p)), "wald-z"
