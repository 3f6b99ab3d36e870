"""STEP: a sequential, exact test for comparing two policies' success rates (own implementation).

Written from the paper (Snyder et al., "Is your imitation learning policy better than mine?", arXiv
2503.10966, RSS 2025) and REFERENCE.md §d.8; no code of the CC BY-NC reference package is used.

One-sided H0: p0 ≥ p1 vs H1: p0 < p1, on pairs (d0, d1) observed one at a time up to a horizon n_max
fixed in advance. Offline synthesis walks t = 1..n_max over the state grid (x, y) = (successes of
policy 0, of policy 1) and, after a dead time of d steps, chooses rejection probabilities r(t, x, y) so
that the rejected null mass stays within a cumulative budget B(t) at 129 control points p_k on the null
boundary p0 = p1 = p_k. Two constructions:

* ``lp`` (default, ``step_lp.py``): one HiGHS LP per step over all candidate states at the frontier,
  maximising the number of rejected states under the budget at every control point, with a monotone,
  label-swap-symmetric boundary. The budget accrues over the decision steps t > d (linear:
  α·(t − d)/(n − d)). After the walk, the exact size is computed at every null rate (a Bernstein
  polynomial in p, evaluated on a dense grid and refined at its local maxima); where it exceeds α
  between control points, those rates become control points of the late steps, which are redone
  (``step_lp.synthesize_lp``). So the size is ≤ α at every null rate, not only at the control points,
  in one synthesis pass (n_max 200: ~3.5 s of CPU; 500: ~15–20 s).
* ``legacy`` (``step_legacy.py``): the previous fixed-order construction, kept for comparison.

A boundary is stored per (t, x): continue if y < lo, reject surely if y ≥ hi, and in between reject with
the probability listed for that state (``frac``; r is non-decreasing in y).

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
from foundry_eval.stats.step_legacy import synthesize_legacy
from foundry_eval.stats.step_lp import bernstein_eval, elevate, push_conditional, synthesize_lp

log = logging.getLogger(__name__)

N_CONTROL_POINTS = 129
SHAPES = ("linear", "power", "zeta")
CONSTRUCTIONS = ("lp", "legacy")
FORMAT_VERSION = 4  # 4: sizes fixed within the pass (different boundaries than 3)
#: Null rates at which the exact size is evaluated after synthesis (per half of [0, 1], dense in arcsin).
N_SIZE_GRID = 4000
#: The size is brought to at most α·(1 − SIZE_SLACK): float rounding can never push it above α.
SIZE_SLACK = 1e-9
#: The LP bounds the size at the control points only; between them it can exceed α (measured: 2e-4
#: relative at α = 0.05, 0.6% at α = 0.05/66, n_max 500, near p = 1/n). ``synthesize_lp`` fixes that
#: within its pass (late steps redone with control points added where the size peaked); should it
#: fail, whole passes follow: points added at every step, then (after MAX_PASSES // 2) a scaled budget.
#: The walk runs at (1 − margin)·B(t): a margin of 1e-3 costs power near the extremes (measured at
#: α = 0.05, 0 vs 0.05: 0.9778 vs 0.9806 with 1e-4).
FIRST_PASS_MARGIN = 1e-4
MAX_PASSES = 6
#: The LP construction adds a control point in the middle of each of the 16 outermost gaps at both
#: ends (p ≲ 0.05 at n_max 200), where the size varies fastest relative to its value: there the LP
#: otherwise overspends between points and the late-step fix claws it back, at a cost in power near 0
#: and 1. Measured at n_max 200 (0 vs 0.05; α = 0.05 / 0.05/66): 0 gaps 0.9803 / 0.4683, 8 gaps
#: 0.9806 / 0.4684, 16 gaps 0.9810 / 0.4687, 24 gaps 0.9772 / 0.4565 (the per-step LP is myopic:
#: more points are not always better), so 16.
EXTREME_GAPS = 16
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
    start: int = 0,
) -> np.ndarray:
    """Cumulative type-I budget B(0..n_max) with B(0) = 0, B(n_max) = alpha, non-decreasing.

    ``linear``: α·t/n. ``power``: α·(t/n)^(1/(1+λ)) (λ > 0 spends earlier). ``zeta``: partial sums of
    1/i^λ, normalised. λ = 0 is linear in both families. ``start``: the budget accrues only after this
    many steps (the shapes apply to t − start over n − start), so the LP construction does not dump the
    dead time's share at its first decision. ``increments``: a user per-step budget (length n_max,
    non-negative), normalised to sum to α (``start`` does not apply).
    """
    if increments is None and 0 < start < n_max:
        b = risk_budget(n_max - start, alpha, shape, lam)
        return np.concatenate([np.zeros(start), b])
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


def refine_extremes(points: np.ndarray, gaps: int) -> np.ndarray:
    """``points`` plus the midpoint (in arcsin √p) of each of the ``gaps`` outermost gaps at both ends."""
    theta = np.arcsin(np.sqrt(points))
    mids = (theta[:gaps] + theta[1 : gaps + 1]) / 2
    return np.unique(np.r_[points, np.sin(mids) ** 2, np.cos(mids) ** 2])


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


@dataclass(frozen=True)
class StepSpec:
    """What a boundary is synthesized for; the cache key."""

    n_max: int
    alpha: float
    shape: str = "linear"
    lam: float = 0.0
    n_points: int = N_CONTROL_POINTS
    increments: tuple[float, ...] | None = None
    construction: str = "lp"

    def __post_init__(self) -> None:
        if not isinstance(self.n_max, int) or self.n_max < 1:
            raise ConfigError(f"STEP n_max must be a positive int, got {self.n_max!r}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"STEP alpha must be in (0, 0.5), got {self.alpha}")
        if self.shape not in SHAPES:
            raise ConfigError(f"unknown STEP budget shape {self.shape!r}; choose one of {SHAPES}")
        if self.construction not in CONSTRUCTIONS:
            raise ConfigError(
                f"unknown STEP construction {self.construction!r}; choose one of {CONSTRUCTIONS}"
            )

    def key(self) -> str:
        inc = "" if self.increments is None else hashlib.sha1(repr(self.increments).encode()).hexdigest()[:12]
        raw = f"n{self.n_max}_a{self.alpha!r}_{self.shape}_l{self.lam!r}_k{self.n_points}_{inc}_{self.construction}_v{FORMAT_VERSION}"
        return "step_" + "".join(c if c.isalnum() or c in "._-" else "_" for c in raw)


@dataclass
class StepPolicy:
    """A synthesized one-sided boundary. At (t, x, y): continue if y < lo[t, x]; reject surely if
    y ≥ hi[t, x]; otherwise reject with the probability listed for (t, x, y) in ``frac``/``frac_r``.
    ``rejected[k]``: null rejection at control point k; ``size_max``: the largest exact size over the
    null rates checked after synthesis (NaN for the legacy construction, which was never checked)."""

    spec: StepSpec
    lo: np.ndarray
    hi: np.ndarray
    frac: np.ndarray  # (F, 3) int32 (t, x, y), sorted
    frac_r: np.ndarray  # (F,)
    rejected: np.ndarray
    size_max: float = float("nan")

    def __post_init__(self) -> None:
        order = np.argsort(self._keys(self.frac[:, 0], self.frac[:, 1], self.frac[:, 2]), kind="stable")
        self.frac, self.frac_r = self.frac[order], self.frac_r[order]
        self._sorted_keys = self._keys(self.frac[:, 0], self.frac[:, 1], self.frac[:, 2])

    def _keys(self, t, x, y) -> np.ndarray:
        w = self.spec.n_max + 1
        return (np.asarray(t, np.int64) * w + np.asarray(x, np.int64)) * w + np.asarray(y, np.int64)

    def reject_probability(self, t: int | np.ndarray, x: np.ndarray | int, y: np.ndarray | int) -> np.ndarray:
        t, x, y = np.broadcast_arrays(np.asarray(t), np.asarray(x), np.asarray(y))
        lo, hi = self.lo[t, x], self.hi[t, x]
        out = np.where(y >= hi, 1.0, 0.0)
        band = (y >= lo) & (y < hi)
        if band.any():
            keys = self._keys(t[band], x[band], y[band])
            i = np.searchsorted(self._sorted_keys, keys)
            i = np.minimum(i, len(self._sorted_keys) - 1)
            found = self._sorted_keys[i] == keys
            out[band] = np.where(found, self.frac_r[i], 0.0)
        return out

    def dense(self, t: int) -> np.ndarray:
        """r(t, x, y) for all x, y ≤ t (a (t+1)×(t+1) array)."""
        x, y = np.indices((t + 1, t + 1))
        return self.reject_probability(t, x, y)


def synthesize(spec: StepSpec, progress: Callable[[int, int], None] | None = None) -> StepPolicy:
    """Synthesize the one-sided STEP boundary for ``spec`` (seconds for n_max = 200)."""
    n = spec.n_max
    d = dead_time(n)
    if n <= d:  # horizon within the dead time: the test can never decide
        never = np.full((n + 1, n + 1), n + 2, dtype=np.int32)
        return StepPolicy(
            spec, never, never.copy(), np.zeros((0, 3), np.int32), np.zeros(0), np.zeros(spec.n_points), 0.0
        )
    if spec.construction == "legacy":
        budget = risk_budget(n, spec.alpha, spec.shape, spec.lam, spec.increments)
        lo, hi, band, rejected = synthesize_legacy(n, d, budget, control_points(n, spec.n_points), progress)
        t, x = np.nonzero(lo < hi)
        frac = [(tt, xx, yy) for tt, xx in zip(t, x) for yy in range(lo[tt, xx], hi[tt, xx])]
        frac_arr = np.array(frac, dtype=np.int32).reshape(-1, 3)
        return StepPolicy(spec, lo, hi, frac_arr, band[frac_arr[:, 0], frac_arr[:, 1]], rejected)
    budget = risk_budget(n, spec.alpha, spec.shape, spec.lam, spec.increments, start=d)
    target = spec.alpha * (1.0 - SIZE_SLACK)
    scale = 1.0 - FIRST_PASS_MARGIN
    points = refine_extremes(control_points(n, spec.n_points), EXTREME_GAPS)

    def overshoots(coeffs: np.ndarray) -> np.ndarray:
        return np.array([q for v, q in size_peaks(coeffs) if v > target])

    for attempt in range(MAX_PASSES):
        b = synthesize_lp(n, d, budget * scale, points, progress, final_check=overshoots)
        peaks = size_peaks(b.size_coeffs)
        size, at = peaks[0]
        if size <= target:
            return StepPolicy(spec, b.lo, b.hi, b.frac, b.frac_r, b.rejected, size)
        log.info("STEP n_max=%d alpha=%.4g: size %.8g at p=%.5f > alpha", n, spec.alpha, size, at)
        over = np.array([q for v, q in peaks if v > target])
        if (
            attempt < MAX_PASSES // 2
        ):  # first: constrain exactly where the size peaked (no power lost elsewhere)
            points = np.unique(np.concatenate([points, over, 1.0 - over]))
        else:  # then: scale the whole budget down
            scale *= target / size * (1.0 - FIRST_PASS_MARGIN)
    raise RuntimeError(f"STEP synthesis for {spec.key()} could not bring the size below alpha")


def size_peaks(coeffs: np.ndarray) -> list[tuple[float, float]]:
    """(size, null rate) at the local maxima of a size polynomial, largest first: a grid of 8,000 rates
    dense in arcsin √p, then each of the 8 highest maxima refined to 1e-13 in p."""
    from scipy.optimize import minimize_scalar

    theta = np.linspace(0.0, math.pi / 2, 2 * N_SIZE_GRID + 1)[1:-1]
    p = np.sin(theta) ** 2
    f = bernstein_eval(coeffs, p)
    idx = np.flatnonzero((f[1:-1] >= f[:-2]) & (f[1:-1] >= f[2:])) + 1
    out = [(float(f.max()), float(p[f.argmax()]))]
    for i in idx[np.argsort(f[idx])[::-1][:8]]:
        res = minimize_scalar(
            lambda q: -float(bernstein_eval(coeffs, np.array([q]))[0]),
            bounds=(p[i - 1], p[i + 1]),
            method="bounded",
            options={"xatol": 1e-13},
        )
        out.append((max(float(-res.fun), float(f[i])), float(res.x) if -res.fun > f[i] else float(p[i])))
    return sorted(out, reverse=True)


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
                pol = StepPolicy(
                    spec, z["lo"], z["hi"], z["frac"], z["frac_r"], z["rejected"], float(meta["size_max"])
                )
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
                frac=pol.frac,
                frac_r=pol.frac_r,
                rejected=pol.rejected,
                meta=json.dumps({"key": spec.key(), "size_max": pol.size_max}),
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
    hit[inband] = u < policy.reject_probability(t[inband], x[inband], y[inband])
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
        construction: str = "lp",
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        a = alpha / 2 if conservative else alpha
        self.spec = StepSpec(n_max=n_max, alpha=a, shape=shape, lam=lam, construction=construction)
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


def exact_rejection_probabilities(policy: StepPolicy, p0: Sequence[float], p1: Sequence[float]) -> np.ndarray:
    """Exact probabilities (forward recursion, no simulation) that the one-sided test rejects by n_max
    when the true rates are (p0[i], p1[i]); all pairs in one pass."""
    a, b = np.asarray(p0, dtype=np.float64).ravel(), np.asarray(p1, dtype=np.float64).ravel()
    m = np.ones((len(a), 1, 1))
    total = np.zeros(len(a))
    for t in range(1, policy.spec.n_max + 1):
        m = _push(m, a, b)
        r = policy.dense(t)
        if r.any():
            total += (m * r).sum(axis=(1, 2))
            m *= 1.0 - r
    return total


def exact_rejection_probability(policy: StepPolicy, p0: float, p1: float) -> float:
    """Exact probability that the one-sided test rejects by n_max when the true rates are (p0, p1)."""
    return float(exact_rejection_probabilities(policy, [p0], [p1])[0])


def exact_size(policy: StepPolicy, p: Sequence[float] | np.ndarray, two_sided: bool = False) -> np.ndarray:
    """Exact size (rejection probability under p0 = p1 = p) at every given p, from the stored policy;
    ``two_sided``: of the reflected two-sided test (either direction rejects; the two one-sided
    boundaries never overlap, since each rejects only where its own policy leads).

    Under the null every path to (x, y) has probability p^(x+y)(1−p)^(2t−x−y), so one forward pass of
    the surviving path weights (independent of p) gives the rejected mass per step and diagonal, i.e.
    the size as a polynomial in p, evaluated exactly at each p.
    """
    n = policy.spec.n_max
    u = np.zeros((n + 1, n + 1))
    u[0, 0] = 1.0
    coeffs = np.zeros(1)
    for t in range(1, n + 1):
        push_conditional(u, t)
        coeffs = elevate(coeffs, 2)
        r = policy.dense(t)
        if two_sided:
            r = r + r.T
        if r.any():
            uu = u[: t + 1, : t + 1]
            s = np.add.outer(np.arange(t + 1), np.arange(t + 1))
            coeffs += np.bincount(s.ravel(), weights=(uu * r).ravel(), minlength=2 * t + 1)
            uu *= 1.0 - r
    return bernstein_eval(coeffs, np.asarray(p, dtype=np.float64))
