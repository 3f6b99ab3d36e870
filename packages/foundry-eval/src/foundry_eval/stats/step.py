"""STEP: a sequential, exact test for comparing two policies' success rates (own implementation).

Written from the paper (Snyder et al., "Is your imitation learning policy better than mine?", arXiv
2503.10966, RSS 2025) and REFERENCE.md §d.8; no code of the CC BY-NC reference package is used.

One-sided H0: p0 ≥ p1 vs H1: p0 < p1, on pairs (d0, d1) observed one at a time up to a horizon n_max
fixed in advance. Offline synthesis walks t = 1..n_max over the state grid (x, y) = (successes of
policy 0, of policy 1), carrying the null mass m_k(x, y) for 129 control points p_k on the null boundary
p0 = p1 = p_k. After a dead time of d steps, each step spends the new type-I budget B(t) − B(t−1) (plus any
unspent budget) on rejections. The per-step LP — maximise rejection along a fixed candidate order
subject to "rejected mass ≤ B(t)" at every control point, with rejection probabilities non-increasing
along the order — has a closed-form optimum: reject candidates fully in order until the first one that
does not fit, which gets the largest fractional probability that fits (see ``_solve_step``; the test suite
checks it against ``scipy.optimize.linprog``). Candidates are states with y > x, ordered by the pooled
Wald z statistic (most extreme first), which is increasing in y at fixed x, so the rejection region is a
boundary; a state (x, y) and its label-swapped twin (t − y, t − x) form one variable (equal r).

Test: ``uv run pytest packages/foundry-eval/tests/test_eval_step.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foundry_core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

N_CONTROL_POINTS = 129
SHAPES = ("linear", "power", "zeta")
FORMAT_VERSION = 1
#: Decision names of the two-sided test.
P0_LESS, P0_GREATER, UNDECIDED = "p0 < p1", "p0 > p1", "undecided"


def dead_time(n_max: int) -> int:
    """Steps with no rejection: ``max(4, floor(log2 n_max) + 1)``; the first decision is at pair d + 1."""
    return max(4, int(math.floor(math.log2(n_max))) + 1)


def risk_budget(
    n_max: int,
    alpha: float,
    shape: str = "linear",
    lam: float = 0.0,
    increments: Sequence[float] | None = None,
) -> np.ndarray:
    """Cumulative type-I budget B(0..n_max) with B(0) = 0, B(n_max) = alpha, non-decreasing.

    ``linear``: α·t/n. ``power``: α·(t/n)^(1/(1+λ)) (λ > 0 spends earlier). ``zeta``: partial sums of
    1/i^λ, normalised. λ = 0 is linear in both families. ``increments``: a user per-step budget
    (length n_max, non-negative), normalised to sum to α.
    """
    t = np.arange(n_max + 1, dtype=np.float64)
    if increments is not None:
        inc = np.asarray(increments, dtype=np.float64)
        if inc.shape != (n_max,) or not np.all(np.isfinite(inc)) or np.any(inc < 0) or inc.sum() <= 0:
            raise ConfigError(
                f"STEP budget increments must be {n_max} non-negative numbers with a positive sum"
            )
        return np.concatenate([[0.0], alpha * np.cumsum(inc) / inc.sum()])
    if shape == "linear" or lam == 0.0:
        return alpha * t / n_max
    if shape == "power":
        if lam <= -1:
            raise ConfigError(f"STEP power budget needs λ > -1, got {lam}")
        return alpha * (t / n_max) ** (1.0 / (1.0 + lam))
    if shape == "zeta":
        inc = np.arange(1, n_max + 1, dtype=np.float64) ** (-lam)
        return np.concatenate([[0.0], alpha * np.cumsum(inc) / inc.sum()])
    raise ConfigError(f"unknown STEP budget shape {shape!r}; choose one of {SHAPES}")


def control_points(n_max: int, k: int = N_CONTROL_POINTS) -> np.ndarray:
    """``k`` null rates in [1/n, 1 − 1/n], evenly spaced in 2·arcsin(√p) (equal Bernoulli-KL steps)."""
    lo = math.asin(math.sqrt(1.0 / n_max))
    theta = np.linspace(lo, math.pi / 2 - lo, k)
    return np.sin(theta) ** 2


def _push(m: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """One pair forward: (x, y) → (x + a, y + b) with Bernoulli(p0) a and Bernoulli(p1) b (vectorised on k)."""
    k, s, _ = m.shape
    mx = np.zeros((k, s + 1, s), dtype=m.dtype)
    mx[:, :-1, :] = m * (1.0 - p0)[:, None, None]
    mx[:, 1:, :] += m * p0[:, None, None]
    out = np.zeros((k, s + 1, s + 1), dtype=m.dtype)
    out[:, :, :-1] = mx * (1.0 - p1)[:, None, None]
    out[:, :, 1:] += mx * p1[:, None, None]
    return out


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


@dataclass(frozen=True)
class StepSpec:
    """What a boundary is synthesized for; the cache key."""

    n_max: int
    alpha: float
    shape: str = "linear"
    lam: float = 0.0
    n_points: int = N_CONTROL_POINTS
    increments: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n_max, int) or self.n_max < 1:
            raise ConfigError(f"STEP n_max must be a positive int, got {self.n_max!r}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"STEP alpha must be in (0, 0.5), got {self.alpha}")
        if self.shape not in SHAPES:
            raise ConfigError(f"unknown STEP budget shape {self.shape!r}; choose one of {SHAPES}")

    def key(self) -> str:
        inc = "" if self.increments is None else hashlib.sha1(repr(self.increments).encode()).hexdigest()[:12]
        raw = f"n{self.n_max}_a{self.alpha!r}_{self.shape}_l{self.lam!r}_k{self.n_points}_{inc}_v{FORMAT_VERSION}"
        return "step_" + "".join(c if c.isalnum() or c in "._-" else "_" for c in raw)


@dataclass
class StepPolicy:
    """A synthesized one-sided boundary. At (t, x, y): continue if y < lo[t, x]; reject if y ≥ hi[t, x];
    otherwise reject with probability ``band[t, x]``. ``rejected[k]``: total null rejection per control point."""

    spec: StepSpec
    lo: np.ndarray
    hi: np.ndarray
    band: np.ndarray
    rejected: np.ndarray

    def reject_probability(self, t: int, x: np.ndarray | int, y: np.ndarray | int) -> np.ndarray:
        x, y = np.asarray(x), np.asarray(y)
        lo, hi = self.lo[t, x], self.hi[t, x]
        return np.where(y >= hi, 1.0, np.where(y >= lo, self.band[t, x], 0.0))


def synthesize(spec: StepSpec, progress: Callable[[int, int], None] | None = None) -> StepPolicy:
    """Synthesize the one-sided STEP boundary for ``spec`` (seconds for n_max = 200)."""
    n = spec.n_max
    d = dead_time(n)
    if n <= d:  # horizon within the dead time: the test can never decide
        never = np.full((n + 1, n + 1), n + 2, dtype=np.int32)
        return StepPolicy(spec, never, never.copy(), np.zeros((n + 1, n + 1)), np.zeros(spec.n_points))
    budget = risk_budget(n, spec.alpha, spec.shape, spec.lam, spec.increments)
    p_all = control_points(n, spec.n_points)
    # The map (x, y, p) → (t − y, t − x, 1 − p) (swap labels and policies) preserves the grid, the twin
    # groups and the absorption, so control points above 1/2 duplicate those below: simulate half.
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
    return StepPolicy(spec=spec, lo=lo, hi=hi, band=band, rejected=full_rejected)


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


# ---------------------------------------------------------------------------------------------- caching


def cache_dir() -> Path:
    """``$FOUNDRY_CACHE_DIR/step`` or ``~/.cache/foundry/step``."""
    base = os.environ.get("FOUNDRY_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "foundry") / "step"


def load_or_synthesize(spec: StepSpec, progress: Callable[[int, int], None] | None = None) -> StepPolicy:
    """The boundary for ``spec`` from the disk cache, synthesizing and atomically caching it if absent."""
    path = cache_dir() / f"{spec.key()}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                pol = StepPolicy(spec, z["lo"], z["hi"], z["band"], z["rejected"])
            if meta.get("key") == spec.key() and pol.lo.shape == (spec.n_max + 1, spec.n_max + 1):
                return pol
            log.warning("STEP cache %s does not match %s; re-synthesizing", path, spec.key())
        except (OSError, ValueError, KeyError) as exc:
            log.warning("STEP cache %s unreadable (%s); re-synthesizing", path, exc)
    pol = synthesize(spec, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".step-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                lo=pol.lo,
                hi=pol.hi,
                band=pol.band,
                rejected=pol.rejected,
                meta=json.dumps({"key": spec.key()}),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return pol


# ------------------------------------------------------------------------------------------------ online


@dataclass(frozen=True)
class SequentialResult:
    """Outcome of a two-sided sequential comparison: decision and the pair at which it was made."""

    decision: str  # P0_LESS, P0_GREATER or UNDECIDED
    n_pairs: int  # pairs used (the stopping time, or the number of pairs seen when undecided)
    method: str

    @property
    def significant(self) -> bool:
        return self.decision != UNDECIDED


def check_pairs(
    d0: Sequence[int] | np.ndarray, d1: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two equal-length 0/1 sequences (bools allowed); anything else raises ``DataError``."""
    a, b = np.asarray(d0), np.asarray(d1)
    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b):
        raise DataError(
            f"sequential test needs two 1-D sequences of equal length, got shapes {a.shape}, {b.shape}"
        )
    for name, v in (("policy 0", a), ("policy 1", b)):
        if v.dtype != bool and not np.all((v == 0) | (v == 1)):
            raise DataError(f"sequential test: {name} outcomes must be 0/1, got {np.unique(v)[:5]}")
    return a.astype(np.int64), b.astype(np.int64)


def first_rejection(
    policy: StepPolicy, d0: np.ndarray, d1: np.ndarray, rng: np.random.Generator
) -> int | None:
    """The 1-based pair at which the one-sided test (H1: p0 < p1) rejects, or None."""
    n = len(d0)
    if n > policy.spec.n_max:
        raise DataError(f"{n} pairs exceed the STEP horizon n_max={policy.spec.n_max} fixed in advance")
    t = np.arange(1, n + 1)
    x, y = np.cumsum(d0), np.cumsum(d1)
    lo, hi = policy.lo[t, x], policy.hi[t, x]
    certain = y >= hi
    inband = (y >= lo) & ~certain
    u = rng.random(int(inband.sum()))
    hit = certain.copy()
    hit[inband] = u < policy.band[t[inband], x[inband]]
    idx = np.flatnonzero(hit)
    return int(idx[0]) + 1 if len(idx) else None


class StepTest:
    """Two-sided reflected STEP: the one-sided test on (0, 1) and on (1, 0), each at ``alpha``
    (``conservative=True`` halves alpha per direction)."""

    def __init__(
        self,
        n_max: int,
        alpha: float = 0.05,
        *,
        shape: str = "linear",
        lam: float = 0.0,
        conservative: bool = False,
        seed: int = 42,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        a = alpha / 2 if conservative else alpha
        self.spec = StepSpec(n_max=n_max, alpha=a, shape=shape, lam=lam)
        self.policy = load_or_synthesize(self.spec, progress)
        self.seed = seed

    def run(self, d0: Sequence[int] | np.ndarray, d1: Sequence[int] | np.ndarray) -> SequentialResult:
        """Feed the pairs in order (a fresh RNG per call: sequences are independent) and decide."""
        a, b = check_pairs(d0, d1)
        rng = np.random.default_rng(self.seed)
        less = first_rejection(self.policy, a, b, rng)
        greater = first_rejection(self.policy, b, a, rng)
        if less is None and greater is None:
            return SequentialResult(UNDECIDED, len(a), "step")
        if greater is None or (less is not None and less < greater):
            return SequentialResult(P0_LESS, less, "step")
        return SequentialResult(P0_GREATER, greater, "step")


def exact_rejection_probability(policy: StepPolicy, p0: float, p1: float) -> float:
    """Exact probability that the one-sided test rejects by n_max when the true rates are (p0, p1)."""
    m = np.ones((1, 1, 1))
    a, b = np.array([p0]), np.array([p1])
    total = 0.0
    for t in range(1, policy.spec.n_max + 1):
        m = _push(m, a, b)
        x = np.arange(t + 1)[:, None]
        y = np.arange(t + 1)[None, :]
        r = policy.reject_probability(
            t, np.broadcast_to(x, (t + 1, t + 1)), np.broadcast_to(y, (t + 1, t + 1))
        )
        total += float((m[0] * r).sum())
        m[0] *= 1.0 - r
    return total
