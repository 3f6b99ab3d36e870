"""NormStats: exact moments, t-digest quantiles vs exact, merging, save/load, mismatch errors, modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundry_action.normalization import FILENAME, METHODS, NormStats
from foundry_action.store import EpisodeWriter, open_store
from foundry_action.testing import make_tiny_store
from foundry_core.errors import DataError


def _store_with(tmp_path, x, name="s.zarr", lengths=None):
    path = tmp_path / name
    lengths = lengths or [len(x)]
    with EpisodeWriter(path, fps=5, fields={"action": (x.shape[1],)}, mode="w") as w:
        start = 0
        for n in lengths:
            w.append_episode({"action": x[start : start + n]})
            start += n
    return open_store(path)


def test_moments_and_quantiles_match_exact(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(3000, 2)), rng.exponential(size=(3000, 2))], axis=1).astype(np.float32)
    stats = NormStats.compute(_store_with(tmp_path, x, lengths=[500, 1000, 1500]))
    s = stats.summary("action")
    np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s["std"], x.astype(np.float64).std(0), rtol=1e-5)
    np.testing.assert_array_equal(s["min"], x.min(0))
    for q in ("01", "05", "50", "95", "99"):
        exact = np.quantile(x, int(q) / 100, axis=0)
        assert np.all(np.abs(s[f"q{q}"] - exact) < 0.05 * x.std(0)), (q, s[f"q{q}"], exact)
        rank = (x <= s[f"q{q}"]).mean(0)  # rank error: the t-digest's accuracy guarantee
        assert np.all(np.abs(rank - int(q) / 100) < 0.005), (q, rank)


def test_merge_equals_union(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(500, 3)), rng.normal(2.0, 3.0, size=(800, 3))
    merged = NormStats.compute(_store_with(tmp_path, a, "a.zarr")).merge(NormStats.compute(_store_with(tmp_path, b, "b.zarr")))
    union = np.concatenate([a, b]).astype(np.float32).astype(np.float64)
    s = merged.summary("action")
    np.testing.assert_allclose(s["mean"], union.mean(0), rtol=1e-6)
    np.testing.assert_allclose(s["std"], union.std(0), rtol=1e-6)
    np.testing.assert_allclose(s["q50"], np.median(union, 0), atol=0.05)


def test_save_load_roundtrip_is_compact(tmp_path, tiny_episodes):
    stats = NormStats.compute(open_store(tiny_episodes), window=(1, 3), method="min_max")
    path = stats.save(tmp_path / "ckpt")
    assert path.name == FILENAME and path.stat().st_size < 200_000
    loaded = NormStats.load(tmp_path / "ckpt")
    assert loaded.method == "min_max" and loaded.window == (1, 3) and loaded.dims == stats.dims
    for k, v in stats.summary("proprio").items():
        np.testing.assert_allclose(loaded.summary("proprio")[k], v)
    assert len(loaded.per_timestep["action"]) == 5


@pytest.mark.parametrize("method", METHODS)
def test_modes_map_to_unit_range_and_invert(tiny_episodes, method):
    store = open_store(tiny_episodes)
    stats = NormStats.load(tiny_episodes / "stats").with_method(method)
    x = store.read("action", 0, store.num_steps)
    y = stats.normalize("action", x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(stats.unnormalize("action", y), x, atol=1e-5)
    if method == "min_max":
        assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
        np.testing.assert_allclose(y.min(0), -1, atol=1e-5)
    elif method == "std":
        np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
    else:
        inside = (np.abs(y) <= 1.0 + 1e-3).mean()
        assert inside > (0.95 if method == "percentile_1_99" else 0.85)
    t = torch.from_numpy(x)
    torch.testing.assert_close(stats.normalize("action", t), torch.from_numpy(y))


def test_mismatched_stats_fail_loudly(tmp_path, tiny_episodes):
    other = make_tiny_store(tmp_path / "other.zarr", dim=7)
    other_stats = NormStats.load(other / "stats")
    with pytest.raises(DataError, match=r"field 'action' has dims \(7,\) but store .* has \(10,\)"):
        other_stats.check_compatible(open_store(tiny_episodes))
    with pytest.raises(DataError, match=r"'action'.*\(10,\).*\(7,\)"):
        NormStats.load(tiny_episodes / "stats").check_compatible(other_stats)
    with pytest.raises(DataError, match="no field 'gripper'"):
        other_stats.check_compatible(open_store(other), fields=["gripper"])
    with pytest.raises(DataError, match="last dim 10, statistics have 7"):
        other_stats.normalize("action", np.zeros((2, 10), np.float32))
    with pytest.raises(DataError, match="no normalization statistics"):
        NormStats.load(tmp_path / "nowhere")
