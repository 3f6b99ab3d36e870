"""Store integrity (issue 16, class 2): a damaged index is refused, never half-read or "repaired";
every chunk exists, so a missing one is reported; declared shapes are checked; append truncates only
the uncommitted tail of the crash it recovers from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr

from foundry_action.inspection import validate
from foundry_action.store import EpisodeWriter, open_store
from foundry_action.testing import make_tiny_store, synthetic_episode
from foundry_core.errors import DataError


@pytest.fixture
def store50(tmp_path):
    """A committed store of 50 short episodes (the issue's scale: one bad entry must not hide 49)."""
    return make_tiny_store(tmp_path / "s.zarr", lengths=[3] * 50, image_size=8)


def _ends(path):
    return zarr.open_array(str(path / "meta/episode_ends"), mode="r+")


def _attrs(path):
    return json.loads((path / "zarr.json").read_text())["attributes"]


def _set_attrs(path, **changes):
    meta = json.loads((path / "zarr.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta["attributes"].pop(key, None)
        else:
            meta["attributes"][key] = value
    (path / "zarr.json").write_text(json.dumps(meta))


def test_corrupt_episode_ends_is_refused_by_readers_validate_and_append(store50):
    _ends(store50)[25] = 3  # one flipped entry in the middle of the committed index
    with pytest.raises(
        DataError, match=r"meta/episode_ends\[25\] = 3 does not increase .*50 episodes are committed"
    ):
        open_store(store50)
    with pytest.raises(DataError, match=r"episode_ends\[25\]"):
        validate(store50)
    with pytest.raises(DataError, match=r"episode_ends\[25\]"):
        EpisodeWriter(store50, mode="a")  # before: the "uncommitted tail" (25 episodes) was deleted for good
    assert _ends(store50).shape == (50,) and zarr.open_array(str(store50 / "data/action")).shape[0] == 150
    _ends(store50)[25] = 78  # repaired by hand: everything is back
    assert len(open_store(store50)) == 50


def test_monotonic_but_wrong_entry_fails_the_checksum(store50):
    _ends(store50)[10] = 32  # still strictly increasing (30 < 32 < 36), but not what was committed
    with pytest.raises(DataError, match="meta/episode_ends does not match the commit record"):
        open_store(store50)


def test_declared_width_mismatch_is_refused(store50):
    _set_attrs(store50, fields={**_attrs(store50)["fields"], "action": {"shape": [7], "dtype": "float32"}})
    shutil.rmtree(
        store50 / "stats"
    )  # before, only a stats mismatch could catch it; without stats validate said ok
    with pytest.raises(DataError, match=r"data/action has per-step shape \(10,\).*declares \(7,\)"):
        validate(store50)


def test_array_shorter_than_the_index_is_refused(store50):
    zarr.open_array(str(store50 / "data/proprio"), mode="r+").resize((100, 10))
    with pytest.raises(DataError, match="data/proprio has 100 steps but 50 committed episodes need 150"):
        open_store(store50)


def test_uncommitted_tail_beyond_the_record_is_truncated_on_append(store50):
    with EpisodeWriter(
        store50, mode="a"
    ) as w:  # a crash after the data and the episode_ends entry, before the commit
        checked = w.check_episode(synthetic_episode(4, seed=7, image_size=8))
        for key, value in checked.items():
            w._root[f"data/{key}"].append(value, axis=0)
        w._root["meta/episode_ends"].append(np.array([154]))
    store = open_store(store50)
    assert len(store) == 50 and store.num_steps == 150
    _, warnings = validate(store50)
    assert any("1 uncommitted entries" in w for w in warnings)
    with EpisodeWriter(store50, mode="a") as w:
        assert len(w) == 50
        w.append_episode(synthetic_episode(2, seed=8, image_size=8))
    assert open_store(store50).lengths().tolist() == [3] * 50 + [2]
    assert validate(store50)[0].num_steps == 152


def test_failed_append_in_process_leaves_no_misaligned_tail(tmp_path, monkeypatch):
    path = make_tiny_store(tmp_path / "s.zarr", lengths=[3], image_size=8, with_stats=False)
    with EpisodeWriter(path, mode="a") as w:
        camera = w._arrays["data/camera/wrist"]
        original = type(camera).append
        calls = {"n": 0}

        def flaky(self, data, axis=0):
            if self is camera and calls["n"] == 0:
                calls["n"] += 1
                raise OSError(28, "No space left on device")
            return original(self, data, axis=axis)

        monkeypatch.setattr(type(camera), "append", flaky)
        with pytest.raises(OSError):
            w.append_episode(synthetic_episode(4, seed=1, image_size=8))
        w.append_episode(synthetic_episode(5, seed=2, image_size=8))
    store = open_store(path)
    assert store.lengths().tolist() == [3, 5]
    np.testing.assert_array_equal(
        store.episode(1)["action"], synthetic_episode(5, seed=2, image_size=8)["action"]
    )
    assert {store.array(k).shape[0] for k in store.keys()} == {8}


def test_all_zero_chunks_are_written_and_a_missing_chunk_is_an_error(tmp_path):
    path = tmp_path / "s.zarr"
    ep = synthetic_episode(4, seed=0, image_size=8)
    ep["camera/scene"][:] = 0  # all-black frames and all-false flags are data, not absent chunks
    with EpisodeWriter(
        path,
        fps=10,
        fields={"action": (10,), "proprio": (10,), "flag": ()},
        dtypes={"flag": "bool"},
        cameras={"scene": (8, 8), "wrist": (8, 8)},
        mode="w",
    ) as w:
        w.append_episode({**ep, "flag": np.zeros(4, bool)})
    assert (path / "data/camera/scene/c/2/0/0/0").is_file() and (path / "data/flag/c/0").is_file()
    validate(path, full_frames=True)
    (path / "data/camera/scene/c/2/0/0/0").unlink()
    with pytest.raises(DataError, match=r"data/camera/scene: chunk 2 \(steps 2..2: episode \d+ frame \d+\) is missing"):
        validate(path, full_frames=True)
    with pytest.raises(DataError, match="chunk 2 .* is missing: the frame is lost"):
        open_store(path).frame_reader("scene").read(np.array([2]))  # before: a black frame, silently
    (path / "data/flag/c/0").unlink()
    with pytest.raises(DataError, match=r"data/flag: chunk 0 .* is missing"):
        validate(path, full_frames=True)


def test_corrupt_chunk_names_array_and_chunk(store50):
    (store50 / "data/camera/wrist/c/7/0/0/0").write_bytes(b"not blosc")
    (store50 / "data/action/c/0/0").write_bytes(b"not zstd")
    with pytest.raises(DataError, match=r"data/action steps \[0, 3\) \(chunks 0..0\) cannot be decoded"):
        open_store(store50).episode(0)
    with pytest.raises(DataError) as err:
        validate(store50, full_frames=True)
    assert "data/action: chunk 0 (steps 0..149) cannot be decoded" in str(err.value)
    assert "data/camera/wrist: chunk 7 (steps 7..7: episode" in str(err.value)


def _make_legacy(path):
    """What a store written before the commit record looks like (main before issue 16)."""
    _set_attrs(path, committed=None, all_chunks_written=None)


def test_legacy_store_reads_appends_and_gains_a_commit_record(store50):
    _make_legacy(store50)
    ends = _ends(store50)
    ends.resize((51,))  # a torn legacy append: grown, never written (-1)
    assert len(open_store(store50)) == 50
    with EpisodeWriter(store50, mode="a") as w:
        w.append_episode(synthetic_episode(2, seed=1, image_size=8))
    assert _attrs(store50)["committed"]["episodes"] == 51 and len(open_store(store50)) == 51


def test_legacy_store_with_a_corrupt_entry_is_refused(store50):
    _make_legacy(store50)
    _ends(store50)[25] = 3
    with pytest.raises(
        DataError,
        match=r"meta/episode_ends\[25\] = 3 is not a valid end .* not an unwritten slot",
    ):
        open_store(store50)
    with pytest.raises(DataError, match="episode index is corrupt"):
        EpisodeWriter(store50, mode="a")
    assert _ends(store50).shape == (50,)


def test_writer_never_deletes_an_existing_path(tmp_path, store50):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/notes.txt").write_text("months of work")
    for path in (tmp_path / "plain", store50):
        with pytest.raises(DataError, match="already exists"):
            EpisodeWriter(path, fps=10, fields={"action": (10,)}, mode="w")
    assert (tmp_path / "plain/notes.txt").exists() and len(open_store(store50)) == 50
    with EpisodeWriter(tmp_path / "plain2", fps=10, fields={"a": (1,)}, mode="w"):
        pass  # a new path (or an empty folder) is fine
    with (
        EpisodeWriter(store50, mode="a") as w,
        pytest.raises(DataError, match="fixed when the store is created"),
    ):
        w.update_attrs({"committed": {}})


def test_validate_cli_tells_the_truth(foundry_pm, cli_runner, store50):
    from foundry_action import plugin
    from foundry_core.cli.main import build_cli

    foundry_pm.register(plugin, name="foundry-action")
    cli = build_cli(lambda: foundry_pm)
    res = cli_runner.invoke(cli, ["data", "validate", "--full", str(store50)])
    assert res.exit_code == 0 and "ok: 50 episodes, 150 steps" in res.output, res.output
    _ends(store50)[25] = 3
    res = cli_runner.invoke(cli, ["data", "validate", str(store50)])  # before: "ok: 25 episodes"
    assert res.exit_code == 2 and "meta/episode_ends[25] = 3" in res.output and "Traceback" not in res.output
