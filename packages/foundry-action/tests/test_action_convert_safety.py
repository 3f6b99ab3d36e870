"""``foundry data convert`` never destroys what it cannot prove is ours, and bad input is one clear
error (issue 16, classes 1 and 5): a destination that is (or holds) the source, a plain folder, an
existing store without --overwrite, a wrong --format, an object-array npz, a missing JPEG, an
unwritable destination."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from foundry_action import plugin
from foundry_action.ownership import check_destination, install, prepare_partial
from foundry_action.store import open_store
from foundry_action.testing import make_tiny_store, synthetic_episode, write_synthetic_wds
from foundry_core.cli.main import build_cli
from foundry_core.errors import DataError


@pytest.fixture
def cli(foundry_pm):
    foundry_pm.register(plugin, name="foundry-action")
    return build_cli(lambda: foundry_pm)


@pytest.fixture
def wds(tmp_path):
    eps = [synthetic_episode(4, seed=0, image_size=16), synthetic_episode(3, seed=1, image_size=16)]
    return write_synthetic_wds(tmp_path / "wds", eps, future=2)


def _convert(cli, cli_runner, *args):
    return cli_runner.invoke(cli, ["data", "convert", *map(str, args)])


def _rewrite_shard(src: Path, dst: Path, edit) -> Path:
    """Copy a shard folder, passing every (name, bytes) member through ``edit`` (None drops it)."""
    dst.mkdir()
    (dst / "manifest.jsonl").write_bytes((src / "manifest.jsonl").read_bytes())
    with tarfile.open(src / "shard_000000.tar") as tin, tarfile.open(dst / "shard_000000.tar", "w") as tout:
        for member in tin:
            data = edit(member.name, tin.extractfile(member).read())
            if data is not None:
                member.size = len(data)
                tout.addfile(member, io.BytesIO(data))
    return dst


def test_source_as_destination_is_refused_and_kept(cli, cli_runner, wds, tmp_path):
    res = _convert(cli, cli_runner, wds, wds, "--overwrite")  # before: the shards were deleted
    assert res.exit_code == 2 and "is (or contains) the source" in res.output
    (tmp_path / "link").symlink_to(wds)
    res = _convert(cli, cli_runner, wds, tmp_path / "link", "--overwrite")
    assert res.exit_code == 2 and "is (or contains) the source" in res.output
    res = _convert(cli, cli_runner, wds, tmp_path, "--overwrite")  # a parent of the source
    assert res.exit_code == 2 and "is (or contains) the source" in res.output
    assert sorted(p.name for p in wds.iterdir()) == ["manifest.jsonl", "shard_000000.tar"]


def test_convert_dot_overwrite_keeps_the_working_folder(cli, cli_runner, wds, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    monkeypatch.chdir(work)
    res = _convert(cli, cli_runner, wds, ".", "--overwrite")  # before: a ValueError traceback
    assert res.exit_code == 2 and "is not an episode store" in res.output and "Traceback" not in res.output
    assert (work / "notes.txt").read_text() == "keep me"
    monkeypatch.chdir(wds)
    res = _convert(cli, cli_runner, ".", ".", "--overwrite")
    assert res.exit_code == 2 and "is (or contains) the source" in res.output
    res = _convert(cli, cli_runner, ".", tmp_path / "from_dot.zarr")  # "." as the source names the task
    assert res.exit_code == 0, res.output
    assert open_store(tmp_path / "from_dot.zarr").meta(0)["task"] == "wds"


def test_overwrite_replaces_only_episode_stores(cli, cli_runner, wds, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("months of work")
    res = _convert(cli, cli_runner, wds, plain, "--overwrite")  # before: the folder was removed
    assert res.exit_code == 2 and "is not an episode store" in res.output
    assert (plain / "notes.txt").exists()
    old = make_tiny_store(tmp_path / "old.zarr", lengths=[2], image_size=8)
    res = _convert(cli, cli_runner, wds, old)
    assert res.exit_code == 2 and "use --overwrite" in res.output and len(open_store(old)) == 1
    res = _convert(cli, cli_runner, wds, old, "--overwrite")
    assert res.exit_code == 0, res.output
    assert len(open_store(old)) == 7 and sorted(p.name for p in tmp_path.iterdir() if "old" in p.name) == [
        "old.zarr"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _convert(cli, cli_runner, wds, empty).exit_code == 0 and len(open_store(empty)) == 7


def test_leftover_partial_is_removed_only_if_ours(wds, tmp_path):
    dst = tmp_path / "out.zarr"
    foreign = tmp_path / "out.zarr.partial"
    foreign.mkdir()
    (foreign / "data.bin").write_bytes(b"someone else's")
    with pytest.raises(DataError, match="is not an unfinished episode store"):
        prepare_partial(dst)
    assert (foreign / "data.bin").exists()
    foreign.rename(tmp_path / "kept")
    make_tiny_store(tmp_path / "out.zarr.partial", lengths=[2], image_size=8)  # an interrupted run of ours
    assert prepare_partial(dst) == dst.resolve().with_name("out.zarr.partial") and not foreign.exists()


def test_a_removal_killed_halfway_leaves_a_store_the_next_run_clears(tmp_path, monkeypatch):
    """After the swap the old store sits at ``.partial`` and is deleted; a kill then must not leave an
    unmarked half-folder that the rerun refuses as foreign (the marker goes last)."""
    import shutil

    from foundry_action import ownership

    dst = tmp_path / "out.zarr"
    leftover = make_tiny_store(tmp_path / "out.zarr.partial", lengths=[2, 3], image_size=8)
    real_rmtree, calls = shutil.rmtree, []

    def dying_rmtree(path, *a, **k):
        calls.append(path)
        real_rmtree(path, *a, **k)
        raise KeyboardInterrupt  # the process dies after deleting one sub-folder

    monkeypatch.setattr(ownership.shutil, "rmtree", dying_rmtree)
    with pytest.raises(KeyboardInterrupt):
        ownership.remove_store(leftover)
    monkeypatch.setattr(ownership.shutil, "rmtree", real_rmtree)
    assert len(calls) == 1 and leftover.exists() and (leftover / "zarr.json").exists()
    assert prepare_partial(dst) == leftover.resolve() and not leftover.exists()


def test_install_swaps_atomically_and_rechecks(tmp_path):
    old = make_tiny_store(tmp_path / "s.zarr", lengths=[2], image_size=8, with_stats=False)
    assert check_destination(old, overwrite=True) is True
    new = make_tiny_store(tmp_path / "s.zarr.partial", lengths=[3, 3], image_size=8, with_stats=False)
    install(new, old)
    assert len(open_store(old)) == 2 and not new.exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "f").write_text("x")
    new = make_tiny_store(tmp_path / "plain.partial", lengths=[3], image_size=8, with_stats=False)
    with pytest.raises(DataError, match="no longer an episode store"):
        install(new, plain)
    assert (plain / "f").exists() and new.exists()


def test_wrong_format_is_one_clear_error(cli, cli_runner, wds, tmp_path):
    res = _convert(
        cli, cli_runner, wds, tmp_path / "a.zarr", "--format", "lerobot_v3"
    )  # before: FileNotFoundError
    assert res.exit_code == 2 and "--format lerobot_v3 expects LeRobot v3 dataset folder" in res.output
    assert "try --format wds" in res.output and "Traceback" not in res.output
    store = make_tiny_store(tmp_path / "s.zarr", lengths=[2], image_size=8)
    res = _convert(cli, cli_runner, store, tmp_path / "b.zarr", "--format", "replay_buffer")
    assert res.exit_code == 2 and "no format matches it" in res.output


def test_object_array_npz_is_refused_without_unpickling(cli, cli_runner, wds, tmp_path):
    def add_object_array(name, data):
        if name == "e0000t00001.lowdim.npz":
            arrays = dict(np.load(io.BytesIO(data)))
            arrays["extra"] = np.array([{"a": 1}, None], dtype=object)
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            return buf.getvalue()
        return data

    src = _rewrite_shard(wds, tmp_path / "objects", add_object_array)
    res = _convert(cli, cli_runner, src, tmp_path / "o.zarr")  # before: a ValueError traceback
    assert (
        res.exit_code == 2
        and "sample e0000t00001 lowdim.npz: array 'extra' holds Python objects" in res.output
    )
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.zarr.partial").exists()


@pytest.mark.parametrize(
    "dropped, message",
    [
        (
            {"e0000t00002.wrist_t0.jpg"},
            "missing image member(s) wrist_t0.jpg",
        ),  # one camera: before, a copy marked valid
        (
            {"e0000t00002.wrist_t0.jpg", "e0000t00002.scene_t0.jpg"},
            "missing image member(s) scene_t0.jpg",
        ),  # all
    ],
)
def test_missing_jpeg_is_reported_not_invented(cli, cli_runner, wds, tmp_path, dropped, message):
    src = _rewrite_shard(wds, tmp_path / "holes", lambda name, data: None if name in dropped else data)
    res = _convert(cli, cli_runner, src, tmp_path / "h.zarr")
    assert res.exit_code == 2 and "sample e0000t00002" in res.output and message in res.output, res.output
    assert not (tmp_path / "h.zarr").exists()


def test_unwritable_destination_is_one_clear_error(cli, cli_runner, wds, tmp_path):
    (tmp_path / "afile").write_text("x")
    res = _convert(cli, cli_runner, wds, tmp_path / "afile/out.zarr")  # before: NotADirectoryError traceback
    assert res.exit_code == 2 and "afile is a file, not a folder" in res.output
    try:  # sysfs refuses new folders even to root (chmod does not stop root, so a 555 folder cannot test this)
        os.mkdir("/sys/foundry_probe")
        os.rmdir("/sys/foundry_probe")
        pytest.skip("/sys accepts new folders here: no unwritable location to test")
    except OSError:
        pass
    res = _convert(cli, cli_runner, wds, "/sys/foundry_test_out.zarr")  # before: PermissionError traceback
    assert res.exit_code == 2 and "Traceback" not in res.output and "/sys" in res.output


def test_debug_shows_the_traceback(cli, cli_runner, wds):
    res = cli_runner.invoke(cli, ["--debug", "data", "convert", str(wds), str(wds), "--overwrite"])
    assert res.exit_code == 2 and "Traceback" in res.output and "DataError" in res.output
    res = cli_runner.invoke(cli, ["data", "convert", str(wds), str(wds), "--overwrite"])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
