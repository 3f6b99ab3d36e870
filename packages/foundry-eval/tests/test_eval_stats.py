"""Clopper–Pearson, posteriors, balanced aggregation, Barnard check values, Lai's test, and no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binomtest

from foundry_core.errors import DataError
from foundry_eval.stats.aggregation import balanced_aggregate
from foundry_eval.stats.barnard import barnard_pvalue
from foundry_eval.stats.clopper_pearson import clopper_pearson
from foundry_eval.stats.lai import LaiTest, crossing_probability, lai_shape
from foundry_eval.stats.posteriors import posterior_mean, posterior_params, posterior_samples
from foundry_eval.stats.step import P0_GREATER, P0_LESS, UNDECIDED, dead_time


@pytest.mark.parametrize(("s", "n"), [(0, 10), (10, 10), (3, 10), (124, 200), (1, 200), (57, 113)])
@pytest.mark.parametrize("conf", [0.9, 0.95])
def test_clopper_pearson_equals_scipy(s, n, conf):
    ci = binomtest(s, n).proportion_ci(confidence_level=conf, method="exact")
    assert clopper_pearson(s, n, conf) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_clopper_pearson_edges():
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(DataError):
        clopper_pearson(5, 3)


def test_posteriors():
    assert posterior_params(7, 10) == (8.0, 4.0)
    assert posterior_mean(7, 10) == pytest.approx(8 / 12)
    x = posterior_samples(7, 10, 2000, seed=1)
    assert x.shape == (2000,) and np.all((x > 0) & (x < 1)) and abs(x.mean() - 8 / 12) < 0.02
    assert np.array_equal(x, posterior_samples(7, 10, 2000, seed=1))


def test_balanced_aggregation():
    per = {
        "A": {"t1": np.ones(10, bool), "t2": np.zeros(6, bool), "t3": np.ones(4, bool)},
        "B": {"t1": np.ones(8, bool), "t2": np.ones(8, bool)},
    }
    agg = balanced_aggregate(per, seed=43)
    assert agg.common_tasks == ["t1", "t2"] and agg.excluded_tasks == ["t3"]
    assert agg.min_n == {"A": 6, "B": 8}
    assert len(agg.outcomes["A"]) == 12 and agg.outcomes["A"].sum() == 6  # each task weighs equally
    assert len(agg.outcomes["B"]) == 16 and agg.outcomes["B"].all()
    assert any("B lacks t3" in w for w in agg.warnings) and any("truncated to 6" in w for w in agg.warnings)
    again = balanced_aggregate(per, seed=43)
    assert np.array_equal(agg.outcomes["A"], again.outcomes["A"])  # seeded shuffle
    with pytest.raises(DataError, match="share no task"):
        balanced_aggregate({"A": {"t1": np.ones(3)}, "B": {"t2": np.ones(3)}})


def test_barnard_check_values():
    p1, m1 = barnard_pvalue(25, 50, 29, 50, alternative="less")
    p2, _ = barnard_pvalue(25, 50, 29, 50)
    assert m1 == "barnard" and round(p1, 3) == 0.265 and round(p2, 3) == 0.531
    p3, m3 = barnard_pvalue(1000, 2000, 1100, 2000, exact_limit=500)
    assert m3 == "wald-z" and p3 < 0.01
    with pytest.raises(DataError):
        barnard_pvalue(3, 2, 1, 2)


def test_lai_boundary_and_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_CACHE_DIR", str(tmp_path))
    t = np.array([0.01, 0.1, 0.5, 1.0])
    assert np.all(np.diff(lai_shape(t)) < 0) and lai_shape(np.array([1.0]))[0] == 0
    test = LaiTest(600, 0.05)
    assert 0.0495 < crossing_probability(test.a, 600, dead_time(600)) <= 0.05
    assert list((tmp_path / "lai").glob("*.json"))  # cached
    assert test.run([0] * 40, [1] * 40).decision == P0_LESS
    assert test.run([1] * 40, [0] * 40).decision == P0_GREATER
    assert test.run([0] * 10, [1] * 10).decision == UNDECIDED  # dead time (d = 10)
    r = test.run([0] * 40, [1] * 40)
    assert r.n_pairs == dead_time(600) + 1 and r.method == "lai"


def test_lai_type_one_error_by_simulation(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_CACHE_DIR", str(tmp_path))
    test = LaiTest(600, 0.05)
    rng = np.random.default_rng(7)
    for p in (0.3, 0.5):
        d = rng.random((2, 400, 600)) < p
        one = np.mean([test.run(a, b).decision == P0_LESS for a, b in zip(d[0], d[1])])
        assert one <= 0.05 + 0.03
    d0, d1 = rng.random((2, 100, 600)) < np.array([0.5, 0.7])[:, None, None]
    assert np.mean([test.run(a, b).decision == P0_LESS for a, b in zip(d0, d1)]) > 0.9


def test_no_torch_import():
    code = (
        "import sys\n"
        "import foundry_eval.results, foundry_eval.compare_cli, foundry_eval.report.html, foundry_eval.report.violins\n"
        "import foundry_eval.stats.compare, foundry_eval.stats.step, foundry_eval.stats.lai\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
