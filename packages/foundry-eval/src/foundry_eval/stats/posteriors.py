"""Beta posteriors of a success rate under a uniform Beta(1, 1) prior (the violin plots).

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_stats.py``.
"""

from __future__ import annotations

import numpy as np


def posterior_params(successes: int, n: int) -> tuple[float, float]:
    """Beta(1 + s, 1 + f) parameters."""
    return 1.0 + successes, 1.0 + (n - successes)


def posterior_mean(successes: int, n: int) -> float:
    a, b = posterior_params(successes, n)
    return a / (a + b)


def posterior_samples(successes: int, n: int, size: int = 2000, seed: int = 0) -> np.ndarray:
    """``size`` draws from the posterior with a seeded generator (reproducible plots)."""
    a, b = posterior_params(successes, n)
    return np.random.default_rng(seed).beta(a, b, size=size)
