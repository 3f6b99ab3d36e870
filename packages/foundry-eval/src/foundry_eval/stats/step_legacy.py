"""The previous STEP boundary construction ("legacy"), kept so that the LP construction can be compared
with it in one process (``benchmarks/step_power.py``, tests) and old results can be reproduced.

Candidates (y > x; a state and its label-swapped twin (t − y, t − x) form one group) are rejected in one
fixed order, the pooled Wald z statistic from the most extreme inward, fully until the first that does not
fit, which gets the largest fractional probability that fits. That is the optimum of a lexicographic LP
with r non-increasing along the order (``_solve_step``; the tests check it against scipy's linprog). Its
weakness, and the reason the default is now ``step_lp``: once one control point's budget is spent, every
later candidate is blocked, so budget at other null rates (extremes, small α) stays unspent. The budget
accrues from t = 0 (the dead time's share is spent at the first allowed step), as before.

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_step.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _candidate_order(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Representatives (x, y), y > x, x + y ≤ t, with twins (t − y, t − x), ordered by pooled z desc."""
    x, y = np.triu_indices(t + 1, k=1)
    keep = x + y <= t
    x, y = x[keep], y[keep]
    s = (x + y).astype(np.float64)
    z = (y - x) / np.sqrt(s * (2 * t - s) / (2 * t))
    order = np.lexsort((x, -(y - x), -z))
    x, y = x[order], y[order]
    return x, y, t - y, t - x


def _solve_step(cost: np.ndarray, room: np.ndarray) -> tuple[int, float]:
    """Closed-form optimum of the per-step LP: (number of fully rejected groups, r of the next group).

    ``cost[g, k]``: null mass of group g under control point k; ``room[k]``: unspent budget. The LP is
    lexicographic along g with r non-increasing in g; its optimum rejects a prefix fully and the next
    group with the largest probability that fits.
    """
    cum = np.cumsum(cost, axis=0)
    over = np.any(cum > room[None, :], axis=1)
    full = int(np.argmax(over)) if over.any() else cost.shape[0]
    if full == cost.shape[0]:
        return full, 0.0
    prev = cum[full - 1] if full > 0 else np.zeros_like(room)
    c = cost[full]
    pos = c > 0
    with np.errstate(over="ignore"):  # a denormal mass gives +inf here, i.e. no limit from that point
        r = float(np.min((room[pos] - prev[pos]) / c[pos])) if pos.any() else 1.0
    return full, min(max(r, 0.0), 1.0)


def _push_inplace(a: np.ndarray, tmp: np.ndarray, s: int, p: np.ndarray) -> None:
    """``_push`` for p0 = p1 = p on preallocated (x, y, k) buffers: the s×s block grows to (s+1)×(s+1)."""
    q = 1.0 - p
    v = tmp[:s, :s]
    np.multiply(a[:s, :s], p, out=v)
    a[:s, :s] *= q
    a[s, :s] = 0.0
    a[1 : s + 1, :s] += v
    v = tmp[: s + 1, :s]
    np.multiply(a[: s + 1, :s], p, out=v)
    a[: s + 1, :s] *= q
    a[: s + 1, s] = 0.0
    a[: s + 1, 1 : s + 1] += v


def synthesize_legacy(
    n: int,
    d: int,
    budget: np.ndarray,
    p_all: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, band, rejected): at (t, x) continue if y < lo, reject if y >= hi, else with prob band."""
    half = (len(p_all) + 1) // 2
    p = p_all[:half]
    m = np.zeros((n + 2, n + 2, len(p)))  # m[x, y, k]: control points last, for contiguous gathers
    tmp = np.empty_like(m)
    m[0, 0] = 1.0
    rejected = np.zeros(len(p))
    lo = np.full((n + 1, n + 1), n + 2, dtype=np.int32)
    hi = np.full((n + 1, n + 1), n + 2, dtype=np.int32)
    band = np.zeros((n + 1, n + 1))
    for t in range(1, n + 1):
        _push_inplace(m, tmp, t, p)
        if progress is not None:
            progress(t, n)
        if t <= d:
            continue
        room = budget[t] - rejected
        xs, ys, xt, yt = _candidate_order(t)
        twin = (xs != xt)[:, None]
        full, r = 0, 0.0
        start, chunk = 0, 256
        while start < len(xs):  # the prefix is usually short: evaluate the order in growing chunks
            sl = slice(start, min(len(xs), start + chunk))
            cost = m[xs[sl], ys[sl]] + np.where(twin[sl], m[xt[sl], yt[sl]], 0.0)
            f, r = _solve_step(cost, room)
            if f < cost.shape[0]:
                full = start + f
                break
            room = room - cost.sum(axis=0)
            full, start, chunk = sl.stop, sl.stop, chunk * 4
        _absorb(m, rejected, xs[:full], ys[:full], xt[:full], yt[:full], 1.0)
        if full < len(xs) and r > 0:
            _absorb(
                m,
                rejected,
                xs[full : full + 1],
                ys[full : full + 1],
                xt[full : full + 1],
                yt[full : full + 1],
                r,
            )
        _store_boundary(t, xs, ys, xt, yt, full, r, lo, hi, band)
    full_rejected = np.concatenate([rejected, rejected[: len(p_all) - half][::-1]])
    return lo, hi, band, full_rejected


def _absorb(m, rejected, xs, ys, xt, yt, r: float) -> None:
    for a, b in ((xs, ys), (xt[xt != xs], yt[xt != xs])):
        if len(a):
            rejected += r * m[a, b].sum(axis=0)
            m[a, b] *= 1.0 - r


def _store_boundary(t, xs, ys, xt, yt, full, r, lo, hi, band) -> None:
    """Per x: hi = smallest fully rejected y (all states further out are rejected too); band = fractional."""
    ax = np.concatenate([xs[:full], xt[:full]])
    ay = np.concatenate([ys[:full], yt[:full]])
    if len(ax):
        np.minimum.at(hi[t], ax, ay)
    if full < len(xs) and r > 0:
        for x, y in {(int(xs[full]), int(ys[full])), (int(xt[full]), int(yt[full]))}:
            lo[t, x] = y
            band[t, x] = r
    lo[t] = np.minimum(lo[t], hi[t])
