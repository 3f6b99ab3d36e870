"""Episode store: round trip, validation errors, crash safety (dangling tails never visible)."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_action.store import EpisodeWriter, is_store, open_store
from foundry_action.testing import synthetic_episode
from foundry_core.errors import DataError

FIELDS = {"action": (10,), "proprio": (10,)}
CAMS = {"scene": (32, 32), "wrist": (32, 32)}


def _writer(path, mode="w"):
    return EpisodeWriter(path, fps=10.0, fields=FIELDS, cameras=CAMS, semantics={"action": "ee pose"}, mode=mode)


def test_round_trip(tmp_path):
    path = tmp_path / "s.zarr"
    eps = [synthetic_episode(n, seed=i) for i, n in enumerate((5, 7))]
    with _writer(path) as w:
        for i, ep in enumerate(eps):
            assert w.append_episode(ep, task="t", instruction=["a", "b"], success=i == 0, source="unit") == i
    store = open_store(path)
    assert is_store(path) and len(store) == 2 and store.num_steps == 12
    assert store.fps == 10.0 and store.fields == FIELDS and store.cameras == CAMS
    assert store.semantics["action"] == "ee pose"
    for i, ep in enumerate(eps):
        got = store.episode(i)
        for k, v in ep.items():
            np.testing.assert_array_equal(got[k], v)
    assert store.meta(0) == {"task": "t", "instructions": ["a", "b"], "success": True, "source": "unit"}
    assert store.bounds(1) == (5, 12)
    with pytest.raises(IndexError):
        store.episode(2)


def test_append_mode_and_mismatch(tmp_path, tiny_episodes):
    with EpisodeWriter(tiny_episodes, mode="a") as w:
        w.append_episode(synthetic_episode(4, seed=9), task="x")
    assert len(open_store(tiny_episodes)) == 4
    with pytest.raises(DataError, match="fields"):
        EpisodeWriter(tiny_episodes, fields={"action": (7,)}, mode="a")


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda e: e["action"].__setitem__((3, 2), np.nan), r"episode 0: action has NaN/inf at step 3 channel 2"),
        (lambda e: e["proprio"].__setitem__((0, 0), np.inf), r"episode 0: proprio has NaN/inf"),
        (lambda e: e.pop("camera/wrist"), r"episode 0: missing camera/wrist"),
        (lambda e: e.__setitem__("action", e["action"][:, :9]), r"action has shape \(6, 9\), expected \(T, 10\)"),
        (lambda e: e.__setitem__("camera/scene", e["camera/scene"].astype(np.float32)), r"camera/scene has dtype float32"),
        (lambda e: e.__setitem__("action", e["action"].astype(str)), r"action has dtype <U"),
        (lambda e: e.__setitem__("proprio", e["proprio"][:4]), r"proprio has 4 steps"),
        (lambda e: e.__setitem__("extra", e["proprio"]), r"unknown keys extra"),
    ],
)
def test_bad_episode_is_rejected(tmp_path, mutate, match):
    ep = synthetic_episode(6, seed=0)
    mutate(ep)
    with _writer(tmp_path / "s.zarr") as w:
        with pytest.raises(DataError, match=match):
            w.append_episode(ep)
        assert len(w) == 0
    assert len(open_store(tmp_path / "s.zarr")) == 0


def test_crash_mid_episode_is_invisible_and_truncated(tmp_path):
    path = tmp_path / "s.zarr"
    with _writer(path) as w:
        w.append_episode(synthetic_episode(5, seed=0))
        # simulate a crash: data arrays and metadata written, the commit (episode_ends) never happens
        checked = w.check_episode(synthetic_episode(8, seed=1))
        for key, value in checked.items():
            w._root[f"data/{key}"].append(value, axis=0)
        w._root["meta/episode_info"].append(np.frombuffer(b'{"task": "lost"}', dtype=np.uint8))
        # and a torn resize of episode_ends: the shape grew but the value was never written (fill -1)
        w._root["meta/episode_ends"].resize((2,))
    store = open_store(path)
    assert len(store) == 1 and store.num_steps == 5
    assert store.array("action").shape[0] == 13  # the tail exists on disk but is not visible
    with EpisodeWriter(path, mode="a") as w:  # reopening for append truncates the tail
        assert len(w) == 1
        w.append_episode(synthetic_episode(3, seed=2), task="after")
    store = open_store(path)
    assert len(store) == 2 and store.lengths().tolist() == [5, 3]
    assert store.array("camera/scene").shape[0] == 8
    np.testing.assert_array_equal(store.episode(1)["action"], synthetic_episode(3, seed=2)["action"])
    assert store.meta(1)["task"] == "after"


def test_not_a_store(tmp_path):
    with pytest.raises(DataError, match="not a Zarr v3 episode store"):
        open_store(tmp_path)


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_frame_reader_fast_path_matches_zarr(tmp_path, codec):
    path = tmp_path / "s.zarr"
    ep = synthetic_episode(6, seed=3)
    ep["camera/scene"][2] = 0  # an all-black frame: written like any other (Zarr would skip it by default)
    with EpisodeWriter(path, fps=10.0, fields=FIELDS, cameras=CAMS, mode="w", image_codec=codec) as w:
        w.append_episode(synthetic_episode(3, seed=1))
        w.append_episode(ep)
    store = open_store(path)
    reader = store.frame_reader("scene")
    assert reader._dir is not None  # the fast path is taken for the pinned layout
    idx = np.array([3, 5, 5, 8, 4])
    np.testing.assert_array_equal(reader.read(idx), store.array("camera/scene").get_orthogonal_selection((idx,)))
    np.testing.assert_array_equal(reader.read(idx)[1], np.zeros((32, 32, 3), np.uint8))
    assert (path / "data/camera/scene/c/5/0/0/0").is_file()
    with pytest.raises(ValueError, match="image_codec"):
        EpisodeWriter(tmp_path / "x.zarr", fps=1.0, fields=FIELDS, image_codec="jpeg")
