"""STEP (own implementation): dead time, early decision, exact size ≤ α at every null rate of a dense
grid (zero tolerance), power ≥ the legacy construction on a rate grid, the composite null, simulated
two-sided error, a monotone symmetric boundary, the legacy closed-form step against scipy's linprog,
caching, input checks, and the golden pair-9 case."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from foundry_core.errors import ConfigError, DataError
from foundry_eval.stats import step as S
from foundry_eval.stats import step_legacy


@pytest.fixture(scope="module")
def step_cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("step_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_CACHE_DIR", str(d))
        yield d


@pytest.fixture(scope="module")
def pol40(step_cache):
    return S.load_or_synthesize(S.StepSpec(n_max=40, alpha=0.05))


def test_dead_time_and_budget():
    assert S.dead_time(200) == 8 and S.dead_time(40) == 6 and S.dead_time(10) == 4
    late = S.risk_budget(50, 0.05, start=8)  # the LP's budget accrues over the decision steps only
    assert (
        np.all(late[:9] == 0)
        and late[-1] == pytest.approx(0.05)
        and np.allclose(np.diff(late[8:]), 0.05 / 42)
    )
    b = S.risk_budget(50, 0.05)
    assert b[0] == 0 and b[-1] == pytest.approx(0.05) and np.all(np.diff(b) >= 0)
    for shape in ("power", "zeta"):
        assert np.allclose(S.risk_budget(50, 0.05, shape, 0.0), b)
        bb = S.risk_budget(50, 0.05, shape, 1.0)
        assert bb[-1] == pytest.approx(0.05) and np.all(np.diff(bb) >= 0) and bb[5] > b[5]
    with pytest.raises(ConfigError):
        S.risk_budget(50, 0.05, "cubic", 1.0)
    p = S.control_points(200)
    assert len(p) == 129 and p[0] == pytest.approx(1 / 200) and p[64] == pytest.approx(0.5)
    assert np.all(np.diff(p[:64]) > np.diff(p[:64])[0] * 0.99)  # denser near 0 than at the middle


def test_never_decides_during_dead_time_and_early_decision(pol40, step_cache):
    d = S.dead_time(40)
    t = np.arange(1, d + 1)
    # no state at t <= d rejects, however extreme
    assert all(
        S.first_rejection(pol40, np.zeros(k, int), np.ones(k, int), np.random.default_rng(0)) is None
        for k in t
    )
    test = S.StepTest(40, 0.05)
    assert test.run([0] * 15, [1] * 15) == S.SequentialResult(S.P0_LESS, d + 1, "step")
    assert test.run([1] * 15, [0] * 15) == S.SequentialResult(S.P0_GREATER, d + 1, "step")
    assert test.run([0, 0, 0], [1, 1, 1]).decision == S.UNDECIDED  # 3-pair sequences never decide
    assert test.run([1] * 40, [1] * 40) == S.SequentialResult(S.UNDECIDED, 40, "step")


#: A dense null grid that is not the synthesis' own check grid: uniform in p plus both tails in log scale.
NULL_GRID = np.unique(
    np.concatenate(
        [np.linspace(0.0005, 0.9995, 1999), np.geomspace(1e-5, 0.02, 200), 1 - np.geomspace(1e-5, 0.02, 200)]
    )
)


@pytest.mark.parametrize("n_max", [12, 25, 40, 70])
@pytest.mark.parametrize("alpha", [0.05, 0.05 / 66])
def test_exact_size_at_most_alpha_on_a_dense_null_grid(n_max, alpha):
    """Zero tolerance: the exact size (not simulated) is ≤ α at every null rate of the grid."""
    pol = S.synthesize(S.StepSpec(n_max=n_max, alpha=alpha))
    size = S.exact_size(pol, NULL_GRID)
    assert size.max() <= alpha, (size.max() / alpha, NULL_GRID[size.argmax()])
    assert pol.size_max <= alpha and pol.rejected.max() <= alpha
    # the budget is spent: at least 99% of α somewhere (the legacy construction left up to 30% unspent)
    assert size.max() >= 0.99 * alpha
    # the size polynomial agrees with the plain forward recursion of the state probabilities
    for p in (0.003, 0.2, 0.5, 0.9):
        assert S.exact_size(pol, [p])[0] == pytest.approx(S.exact_rejection_probability(pol, p, p), rel=1e-9)


def test_an_overshoot_between_control_points_is_fixed_in_the_same_pass(monkeypatch):
    """n_max 40, α = 0.05/66: the first walk's size exceeds α between control points; the rates where it
    peaks become control points of the late steps, which are redone, not the whole synthesis."""
    from foundry_eval.stats import step_lp

    calls, checks = [], []
    real_lp, real_peaks = step_lp.synthesize_lp, S.size_peaks

    def counting_lp(*a, **k):
        calls.append(1)
        return real_lp(*a, **k)

    def counting_peaks(coeffs):
        peaks = real_peaks(coeffs)
        checks.append(peaks[0][0])
        return peaks

    monkeypatch.setattr(S, "synthesize_lp", counting_lp)
    monkeypatch.setattr(S, "size_peaks", counting_peaks)
    alpha = 0.05 / 66
    pol = S.synthesize(S.StepSpec(n_max=40, alpha=alpha))
    assert len(calls) == 1  # one synthesis pass
    assert checks[0] > alpha  # the first walk did overshoot (this test exercises the fix)
    assert S.exact_size(pol, NULL_GRID).max() <= alpha and pol.size_max <= alpha
    assert len(pol.rejected) > S.N_CONTROL_POINTS and pol.rejected.max() <= alpha  # rates were added


def test_composite_null_and_power(pol40):
    # p0 > p1 is inside H0: never more rejection than on the boundary p0 = p1 (monotone boundary)
    for hi_, lo_ in ((0.6, 0.4), (0.3, 0.25), (0.05, 0.0), (1.0, 0.95)):
        assert S.exact_rejection_probability(pol40, hi_, lo_) <= S.exact_size(pol40, [lo_, hi_]).max()
    assert S.exact_rejection_probability(pol40, 0.6, 0.4) < 0.05 / 10
    assert S.exact_rejection_probability(pol40, 0.3, 0.8) > 0.8


RATES = (0.0, 0.01, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.05 / 6, 0.05 / 66])
def test_power_at_least_the_legacy_construction_everywhere(alpha):
    n = 60
    new = S.synthesize(S.StepSpec(n_max=n, alpha=alpha))
    old = S.synthesize(S.StepSpec(n_max=n, alpha=alpha, construction="legacy"))
    p0, p1 = np.array([(a, b) for a in RATES for b in RATES if a < b]).T
    pw_new = S.exact_rejection_probabilities(new, p0, p1)
    pw_old = S.exact_rejection_probabilities(old, p0, p1)
    # 1e-12: float rounding of sums of ~1e4 terms where both powers are 1 (e.g. 0.9999999999999998 vs 1.0)
    assert np.all(pw_new >= pw_old - 1e-12), [
        (a, b, x, y) for a, b, x, y in zip(p0, p1, pw_new, pw_old) if x < y
    ]
    assert np.max(pw_new - pw_old) > 0.01  # and strictly better somewhere


def test_simulated_type_one_error_two_sided(step_cache):
    test = S.StepTest(30, 0.05)
    rng = np.random.default_rng(1)
    for p in (0.2, 0.5, 0.8):
        d0, d1 = rng.random((2, 1500, 30)) < p
        rate = np.mean([test.run(a, b).significant for a, b in zip(d0, d1)])
        assert rate <= 2 * 0.05 + 0.02  # each direction at alpha (reference convention)
        one = np.mean([test.run(a, b).decision == S.P0_LESS for a, b in zip(d0, d1)])
        assert one <= 0.05 + 0.015


def test_symmetric_in_the_two_policies(pol40):
    for t in (7, 12, 25, 40):
        r = pol40.dense(t)
        # label swap + policy swap: (x, y) -> (t - y, t - x) has the same rejection probability
        assert np.allclose(r, r[::-1, ::-1].T)
        assert np.all(r[np.tril_indices(t + 1)] == 0)  # one-sided: never rejects when y <= x
        # monotone boundary: non-decreasing in y at fixed x, non-increasing in x at fixed y
        assert np.all(np.diff(r, axis=1) >= 0) and np.all(np.diff(r, axis=0) <= 0)
    rng = np.random.default_rng(3)
    test = S.StepTest(40, 0.05)
    for _ in range(30):
        a, b = rng.random((2, 40)) < rng.random(2)[:, None]
        ra, rb = test.run(a, b), test.run(b, a)
        flip = {S.P0_LESS: S.P0_GREATER, S.P0_GREATER: S.P0_LESS, S.UNDECIDED: S.UNDECIDED}
        assert rb.decision == flip[ra.decision] and rb.n_pairs == ra.n_pairs


def test_closed_form_step_equals_linprog():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k, g = 6, 12
        cost = rng.random((k, g)) * 0.01
        room = rng.random(k) * 0.04
        full, r = step_legacy._solve_step(cost.T, room)
        # lexicographic LP (maximise r_0, then r_1, ...) with r non-increasing along g and cost @ r <= room,
        # solved one objective at a time with HiGHS
        mono = np.zeros((g - 1, g))
        mono[np.arange(g - 1), np.arange(g - 1)] = -1
        mono[np.arange(g - 1), np.arange(1, g)] = 1
        bounds = [(0.0, 1.0)] * g
        for i in range(g):
            res = linprog(
                -np.eye(g)[i],
                A_ub=np.vstack([cost, mono]),
                b_ub=np.concatenate([room, np.zeros(g - 1)]),
                bounds=bounds,
                method="highs",
            )
            assert res.status == 0
            v = min(1.0, max(0.0, res.x[i] - 1e-10))
            bounds[i] = (v, v)
        got = np.array([b[0] for b in bounds])
        expect = np.zeros(g)
        expect[:full] = 1
        if full < g:
            expect[full] = r
        assert np.allclose(got, expect, atol=1e-7)


def test_input_checks(step_cache):
    test = S.StepTest(30, 0.05)
    with pytest.raises(DataError, match="0/1"):
        test.run([0, 2, 1], [1, 1, 1])
    with pytest.raises(DataError, match="equal length"):
        test.run([0, 1], [1, 1, 1])
    with pytest.raises(DataError, match="horizon"):
        test.run([0] * 31, [1] * 31)
    with pytest.raises(ConfigError):
        S.StepSpec(n_max=30, alpha=0.7)
    short = S.StepTest(4, 0.05)  # horizon inside the dead time: never decides, no error
    assert short.run([0] * 4, [1] * 4) == S.SequentialResult(S.UNDECIDED, 4, "step")


def test_cache_is_reused_and_keyed(step_cache, monkeypatch):
    spec = S.StepSpec(n_max=20, alpha=0.05)
    a = S.load_or_synthesize(spec)
    files = list((step_cache / "step").glob("step_n20_*.npz"))
    assert len(files) == 1 and not list((step_cache / "step").glob(".step-*"))
    monkeypatch.setattr(S, "synthesize", lambda *a, **k: pytest.fail("cache not used"))
    b = S.load_or_synthesize(spec)
    assert (
        np.array_equal(a.hi, b.hi) and np.array_equal(a.frac, b.frac) and np.array_equal(a.frac_r, b.frac_r)
    )
    keys = {
        S.StepSpec(20, 0.05).key(),
        S.StepSpec(20, 0.025).key(),
        S.StepSpec(20, 0.05, "zeta", 1.0).key(),
        S.StepSpec(20, 0.05, construction="legacy").key(),
    }
    assert len(keys) == 4
    assert b.size_max == a.size_max <= 0.05 and len(b.frac) == len(a.frac)
    with pytest.raises(ConfigError, match="construction"):
        S.StepSpec(20, 0.05, construction="greedy")


@pytest.mark.parametrize("construction", ["lp", pytest.param("legacy", marks=pytest.mark.slow)])
def test_golden_pair_nine_at_n200(step_cache, construction):
    """Reference package 0.0.9, n_max = 200, alpha = 0.05, two-sided: 15 zeros vs 15 ones → pair 9."""
    test = S.StepTest(200, 0.05, construction=construction)
    assert test.run([0] * 15, [1] * 15) == S.SequentialResult(S.P0_LESS, 9, "step")
    assert test.run([1] * 15, [0] * 15) == S.SequentialResult(S.P0_GREATER, 9, "step")
    assert test.policy.rejected.max() <= 0.05
    # p = 0.6 vs 0.65 is rarely separated within 200 pairs
    assert S.exact_rejection_probability(test.policy, 0.6, 0.65) < 0.35
