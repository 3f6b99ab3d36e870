"""STEP boundary construction by a per-step linear program (the default construction).

Written from the paper (arXiv 2503.10966) and REFERENCE.md §d.8; no code of the CC BY-NC reference
package is used. Why an LP: the previous construction rejected states in one fixed order and stopped at
the first that did not fit, so once one null rate's budget was spent, states whose null mass lives at
other rates (near 0 or 1, or at small α) were never rejected and most of the budget stayed unspent. Here
every step solves, with HiGHS, one LP over the rejection probabilities r(x, y) ∈ [0, 1] of all candidate
states at the frontier of the continuation region:

    maximise   Σ r(x, y)                      (the number of rejected states: each state counts once)
    subject to rejected_k + Σ r(x, y)·m_k(x, y) ≤ B(t)   at every control point p_k,
               r(x, y) ≤ r(x, y + 1) and r(x, y) ≤ r(x − 1, y)   (a monotone boundary),
               r(x, y) = r(t − y, t − x)                         (label-swap symmetry).

The monotone boundary keeps the composite null p0 ≥ p1 safe: with r non-decreasing in y and
non-increasing in x, raising p0 or lowering p1 can only lower the rejection probability, so the worst
case is p0 = p1, which the control points bound. Counting states (not mass) makes cheap states at the
extremes as valuable as central ones, which is where the old construction left power on the table.

Why the state is one number per (x, y): every path to (x, y) has the same probability under any
(p0, p1), so the surviving null mass is ``N(x, y)·p^(x+y)·(1−p)^(2t−x−y)`` with N the (rejection-weighted)
number of surviving paths, whatever p is. We store ``u = N / C(2t, x+y)``, the conditional probability
of (x, y) given x + y (in [0, 1], no overflow up to n_max = 500 and beyond), and the null mass at p_k is
``u · Binomial(2t, p_k).pmf(x + y)``. The rejected mass per step and diagonal x + y is also kept as a
Bernstein polynomial of degree 2t (``size_coeffs``): the exact size at ANY null rate p, used to verify and
fix the size between control points (see ``step.synthesize``).

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_step.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.special import gammaln
from scipy.stats import binom

log = logging.getLogger(__name__)

#: Rows of the LP are scaled to the remaining room; HiGHS treats smaller entries as 0, so the solution is
#: re-checked against the exact masses afterwards (and scaled down if it overshoots).
_ROOM_MARGIN = 1e-7
_START_DEPTH = 4
#: How often the last step is solved again with the rates where the finished size exceeded α.
_FINAL_FIXES = 4


@dataclass
class LpBoundary:
    """Raw output of the LP construction: certain-rejection thresholds, fractional states, size data."""

    hi: np.ndarray  # (n+1, n+1): reject surely if y >= hi[t, x]
    lo: np.ndarray  # (n+1, n+1): continue surely if y < lo[t, x]
    frac: np.ndarray  # (F, 3) int: (t, x, y) of states rejected with probability in (0, 1)
    frac_r: np.ndarray  # (F,)
    rejected: np.ndarray  # rejected null mass at each control point (all of them, both halves)
    size_coeffs: np.ndarray  # Bernstein coefficients (degree 2 n_max) of the exact size as a function of p
    points: np.ndarray  # the control points ``rejected`` refers to (the given ones plus any added)


def push_conditional(u: np.ndarray, t: int) -> None:
    """One pair forward under the null, in place: u (t×t block, degree 2t−2) → (t+1)×(t+1), degree 2t.

    N_t(x, y) = N(x, y) + N(x−1, y) + N(x, y−1) + N(x−1, y−1); dividing by C(2t, s) gives the weights
    C(2t−2, s−j)/C(2t, s), which sum to 1 over j (a Markov step of the conditional law).
    """
    m = 2 * t
    s = np.add.outer(np.arange(t + 1), np.arange(t + 1)).astype(np.float64)
    den = m * (m - 1.0)
    old = u[:t, :t].copy()
    new = np.zeros((t + 1, t + 1))
    new[:t, :t] = old * ((m - s[:t, :t]) * (m - s[:t, :t] - 1) / den)
    cross = s * (m - s) / den
    new[1:, :t] += old * cross[1:, :t]
    new[:t, 1:] += old * cross[:t, 1:]
    new[1:, 1:] += old * (s[1:, 1:] * (s[1:, 1:] - 1) / den)
    u[: t + 1, : t + 1] = new


def elevate(coeffs: np.ndarray, by: int) -> np.ndarray:
    """Bernstein degree elevation (the same polynomial written in degree + ``by``)."""
    for _ in range(by):
        m = len(coeffs)  # new degree
        j = np.arange(m + 1) / m
        out = np.zeros(m + 1)
        out[1:] += j[1:] * coeffs
        out[:-1] += (1.0 - j[:-1]) * coeffs
        coeffs = out
    return coeffs


def bernstein_eval(coeffs: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Σ_j coeffs[j]·C(m, j) p^j (1−p)^(m−j): the exact size at each p (a binomial expectation)."""
    m = len(coeffs) - 1
    p = np.atleast_1d(np.asarray(p, dtype=np.float64))
    out = np.empty(len(p))
    for i in range(0, len(p), 512):
        out[i : i + 512] = binom.pmf(np.arange(m + 1)[None, :], m, p[i : i + 512, None]) @ coeffs
    return out


def _binom_pmf(t: int, p: np.ndarray) -> np.ndarray:
    """Binomial(2t, p_k).pmf(s) for s = 0..2t, as a (2t+1, k) table (log space: no overflow)."""
    s = np.arange(2 * t + 1, dtype=np.float64)[:, None]
    logc = gammaln(2 * t + 1) - gammaln(s + 1) - gammaln(2 * t - s + 1)
    return np.exp(logc + s * np.log(p)[None, :] + (2 * t - s) * np.log1p(-p)[None, :])


@dataclass
class _Walk:
    """What the forward walk carries from one step to the next (copied to restart from a step)."""

    u: np.ndarray  # conditional surviving null law of (x, y) given x + y
    coeffs: np.ndarray  # Bernstein coefficients of the size so far
    frac_parts: list[np.ndarray]
    frac_r_parts: list[np.ndarray]
    depth: int

    def copy(self) -> _Walk:
        return _Walk(
            self.u.copy(), self.coeffs.copy(), list(self.frac_parts), list(self.frac_r_parts), self.depth
        )


def synthesize_lp(
    n: int,
    d: int,
    budget: np.ndarray,
    p_all: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    final_check: Callable[[np.ndarray], np.ndarray] | None = None,
) -> LpBoundary:
    """Run the per-step LP for t = d+1..n under the cumulative budget ``budget`` (length n+1).

    ``final_check(size_coeffs)`` returns the null rates where a finished boundary's size exceeds α
    (between control points). They become control points from a late step on, and the walk is redone
    from there (the last step first, then the last quarter, the last half, the whole): an added point's
    budget runs linearly from what the earlier steps already rejected there to B(n_max). Because the
    overshoot is small next to what the late steps spend, this fixes the size in one pass (where
    re-synthesizing with the points added at every step took 3–4 passes at n_max 500) and leaves the
    early steps as they were. Returns with the overshoot left only when even a full redo cannot fix it.
    """
    half = (len(p_all) + 1) // 2  # the label swap maps p ↔ 1 − p: control points above 1/2 are mirrors
    base = p_all[:half].copy()
    added = np.zeros(0)
    restarts = sorted({n, n - (n - d) // 4, n - (n - d) // 2, d + 1}, reverse=True)
    snapshots: dict[int, _Walk] = {}
    hi = np.full((n + 1, n + 1), n + 2, dtype=np.int32)
    lo = np.full((n + 1, n + 1), n + 2, dtype=np.int32)
    u0 = np.zeros((n + 1, n + 1))
    u0[0, 0] = 1.0
    walk, start, t_from, b_from = _Walk(u0, np.zeros(1), [], [], _START_DEPTH), 1, n + 1, np.zeros(0)
    for fix in range(_FINAL_FIXES + 1):
        p = np.r_[base, added]
        rejected = np.r_[bernstein_eval(walk.coeffs, base), b_from]  # all zeros on the first walk
        for t in range(start, n + 1):
            if t in restarts and t not in snapshots:
                snapshots[t] = walk.copy()
            push_conditional(walk.u, t)
            walk.coeffs = elevate(walk.coeffs, 2)
            if progress is not None:
                progress(t, n)
            if t <= d:
                continue
            limit = np.r_[
                budget[t] * np.ones(len(base)),
                b_from + (budget[n] - b_from) * (t - t_from + 1) / (n - t_from + 1),
            ]
            rejected = _step(walk, t, p, limit - rejected, rejected, hi, lo)
        over = np.zeros(0) if final_check is None else np.asarray(final_check(walk.coeffs), np.float64)
        if not len(over) or fix == _FINAL_FIXES:
            break
        added = np.unique(np.r_[added, _cluster(np.minimum(over, 1.0 - over), base)])
        for t_from in restarts:  # the latest step the added points can still be fixed from
            b_from = bernstein_eval(snapshots[t_from].coeffs, added)
            if np.all(b_from < budget[n]):
                break
        walk, start = snapshots[t_from].copy(), t_from
        log.debug(
            "STEP size above alpha at p=%s: redo from step %d with them as control points", over, t_from
        )
    frac = np.concatenate(walk.frac_parts) if walk.frac_parts else np.zeros((0, 3), dtype=np.int32)
    frac_r = np.concatenate(walk.frac_r_parts) if walk.frac_r_parts else np.zeros(0)
    mirror = p < 0.5 - 1e-12  # every control point in [0, 1], the mirrors above 1/2 included, in order
    points = np.r_[p, 1.0 - p[mirror]]
    order = np.argsort(points, kind="stable")
    full = np.r_[rejected, rejected[mirror]][order]
    return LpBoundary(hi, lo, frac.astype(np.int32), frac_r, full, walk.coeffs, points[order])


def _cluster(q: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Each rate in ``q`` (≤ 1/2) and two neighbours a quarter of the control spacing away (in arcsin √p):
    with the peak alone pinned, the redone walk tends to overshoot right beside it."""
    theta = np.arcsin(np.sqrt(q))
    step = float(np.median(np.diff(np.arcsin(np.sqrt(grid))))) / 4.0
    out = np.sin(np.clip(np.r_[theta, theta - step, theta + step], 1e-6, np.pi / 4)) ** 2
    return out


def _step(walk: _Walk, t: int, p: np.ndarray, room: np.ndarray, rejected: np.ndarray, hi, lo) -> np.ndarray:
    """Solve, absorb and store step t; return the updated rejected null mass per control point."""
    uu = walk.u[: t + 1, : t + 1]
    pmf = _binom_pmf(t, p)
    r, walk.depth = _solve_step(uu, t, pmf, room, walk.depth)
    s = np.add.outer(np.arange(t + 1), np.arange(t + 1))
    diag = np.bincount(s.ravel(), weights=(uu * r).ravel(), minlength=2 * t + 1)
    walk.coeffs = walk.coeffs + diag
    uu *= 1.0 - r
    _store(t, r, hi, lo, walk.frac_parts, walk.frac_r_parts)
    walk.depth = max(_START_DEPTH, walk.depth // 2)
    return rejected + pmf.T @ diag


def _solve_step(
    uu: np.ndarray, t: int, pmf: np.ndarray, room: np.ndarray, depth: int
) -> tuple[np.ndarray, int]:
    """Rejection probabilities r (t+1, t+1) for step t, and the frontier depth that was needed.

    Variables: states with y > x within ``depth`` of the frontier in their column (or whose label-swap
    twin is); states above the frontier carry no mass (free: r = 1), states deeper stay (r = 0). If the
    LP rejects at the deepest level, the depth doubles and the step is solved again.
    """
    x, y = np.indices((t + 1, t + 1))
    has = uu > 0
    top = np.where(has.any(axis=1), t - np.argmax(has[:, ::-1], axis=1), -1)
    top = np.maximum.accumulate(top)  # unreachable states form an upper-left set: keep it exactly so
    col_depth = top[:, None] - y
    cand = (y > x) & (col_depth >= 0)
    twin_depth = col_depth[t - y, t - x]
    while True:
        r = _lp(uu, t, pmf, room, cand & ((col_depth < depth) | (twin_depth < depth)), top, x, y)
        deepest = cand & (np.minimum(col_depth, twin_depth) == depth - 1) & (r > 0)
        if not deepest.any() or depth >= t:
            return r, depth
        depth *= 2


def _lp(uu, t, pmf, room, var, top, x, y) -> np.ndarray:
    rep = var & (x + y <= t)  # one variable per twin pair (the member with x + y ≤ t)
    rx, ry = np.nonzero(rep)
    tx, ty = t - ry, t - rx
    nv = len(rx)
    r = np.zeros((t + 1, t + 1))
    r[y > top[:, None]] = 1.0  # unreachable: rejecting costs nothing
    r[y <= x] = 0.0
    if nv == 0:
        return r
    idx = np.full((t + 1, t + 1), -1, dtype=np.int64)
    idx[rx, ry] = np.arange(nv)
    idx[tx, ty] = np.arange(nv)
    s = rx + ry
    twin = (tx != rx) | (ty != ry)
    cost = uu[rx, ry, None] * pmf[s] + np.where(twin[:, None], uu[tx, ty, None] * pmf[2 * t - s], 0.0)
    weight = (uu[rx, ry] > 0) * np.where(twin, 2.0, 1.0)
    # monotone boundary: r(state) ≤ r(dominating neighbour) for neighbours that are variables too
    vx, vy = np.nonzero(var)
    lhs, rhs = [], []
    for dx, dy in ((-1, 0), (0, 1)):
        ox, oy = vx + dx, vy + dy
        ok = (ox >= 0) & (oy <= t)
        ox, oy, ix, iy = ox[ok], oy[ok], vx[ok], vy[ok]
        inside = var[ox, oy]
        a, b = idx[ix[inside], iy[inside]], idx[ox[inside], oy[inside]]
        lhs.append(a[a != b])
        rhs.append(b[a != b])
    pairs = np.unique(np.stack([np.concatenate(lhs), np.concatenate(rhs)], axis=1), axis=0)
    nm = len(pairs)
    mono = sp.csr_matrix(
        (
            np.r_[np.ones(nm), -np.ones(nm)],
            (np.r_[np.arange(nm), np.arange(nm)], np.r_[pairs[:, 0], pairs[:, 1]]),
        ),
        shape=(nm, nv),
    )
    scaled = (cost / room[None, :]).T
    scaled[scaled < 1e-10] = 0.0  # HiGHS drops |a| < 1e-9 anyway; the exact check below covers both
    binding = scaled.sum(axis=1) > 1.0 - _ROOM_MARGIN  # a row that cannot be exceeded is left out
    scaled = scaled[binding]
    res = linprog(
        -weight,
        A_ub=sp.vstack([sp.csr_matrix(scaled), mono]).tocsc(),
        b_ub=np.r_[np.full(len(scaled), 1.0 - _ROOM_MARGIN), np.zeros(nm)],
        bounds=(0.0, 1.0),
        method="highs-ds",
    )
    if res.x is None:
        raise RuntimeError(f"STEP LP at t={t} failed: {res.message}")
    rv = np.clip(res.x, 0.0, 1.0)
    rv[rv < 1e-9] = 0.0
    rv[rv > 1.0 - 1e-9] = 1.0
    r[rx, ry] = rv
    r[tx, ty] = rv
    # HiGHS meets the monotone rows only to its tolerance (±1e-14 seen): make the boundary exactly
    # monotone by taking, at each state, the minimum over the states that dominate it (x' ≤ x, y' ≥ y).
    # This only lowers r, and it keeps the label-swap symmetry (the dominance order maps onto itself).
    r = np.minimum.accumulate(np.minimum.accumulate(r[:, ::-1], axis=1)[:, ::-1], axis=0)
    rv = r[rx, ry]
    spent = cost.T @ rv
    over = spent > room
    if over.any():  # HiGHS tolerances: shrink this step's rejections until they fit exactly
        shrink = float(np.min(room[over] / spent[over])) * (1.0 - 1e-12)
        r[rx, ry] = rv * shrink  # a common factor on the variables keeps the order among them
        r[tx, ty] = rv * shrink
    return r


def _store(t: int, r: np.ndarray, hi, lo, frac_parts, frac_r_parts) -> None:
    """Per column x: hi = first y of the certain-rejection run at the top, lo = first y with r > 0."""
    sure = r >= 1.0
    # r is non-decreasing in y: the certain run is the top of each column
    n_sure = np.sum(sure, axis=1)
    hi[t, : t + 1] = np.where(n_sure > 0, t + 1 - n_sure, t + 2)
    pos = r > 0
    n_pos = np.sum(pos, axis=1)
    lo[t, : t + 1] = np.where(n_pos > 0, t + 1 - n_pos, t + 2)
    fx, fy = np.nonzero(pos & ~sure)
    if len(fx):
        frac_parts.append(np.stack([np.full(len(fx), t), fx, fy], axis=1))
        frac_r_parts.append(r[fx, fy])
