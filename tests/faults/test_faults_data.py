"""Fault injection for data writers (issue 16): ``kill -9`` at random (seeded) points during
``foundry data convert``, ``foundry eval demos --append`` and a bare ``EpisodeWriter`` append loop.

After every kill: the previous good state is intact and loadable (same episodes, same values),
``validate --full`` tells the truth (it passes, at most warning about an uncommitted tail), and
rerunning the command completes. Kill points are drawn from ``random.Random(seed)`` after the
process has started writing, so they land inside writes rather than in interpreter start-up. The
default run keeps one seed per command; ``-m slow`` runs many.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from foundry_action.inspection import validate
from foundry_action.store import open_store
from foundry_action.testing import make_tiny_store, synthetic_episode, write_synthetic_wds
from foundry_eval.sim.demos import generate_demos

FOUNDRY = [sys.executable, "-c", "from foundry_core.cli.main import main; main()"]
FAST_SEEDS = [0]
SLOW_SEEDS = list(range(1, 13))


def _kill_during(cmd: list[str], started: Callable[[], bool], delay: float, timeout: float = 240.0) -> bool:
    """Run ``cmd`` in its own process group; ``delay`` s after ``started()`` turns true, SIGKILL the group.

    Returns True when the kill interrupted the command (False: it finished first; the state is checked anyway).
    """
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not started():
            if proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{cmd} did not start writing within {timeout} s")
            time.sleep(0.01)
        if proc.poll() is None:
            time.sleep(delay)
        interrupted = proc.poll() is None
        if interrupted:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: worker processes die too
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not interrupted:
        assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else proc.returncode
    if proc.stderr:
        proc.stderr.close()
    return interrupted


def _committed(path: Path) -> int:
    """Committed episodes as a concurrent reader sees them (-1 while the store cannot be opened yet)."""
    import json

    try:
        return int(json.loads((path / "zarr.json").read_text())["attributes"]["committed"]["episodes"])
    except (OSError, ValueError, KeyError):
        return -1


def _snapshot(path: Path) -> list[tuple[np.ndarray, dict]]:
    store = open_store(path)
    return [(store.episode(i)["action"], store.meta(i)) for i in range(len(store))]


def _assert_prefix(path: Path, before: list[tuple[np.ndarray, dict]]) -> int:
    """The store opens, validates fully, and its first episodes are exactly ``before``; return its length."""
    store, _warnings = validate(path, full_frames=True)
    assert len(store) >= len(before)
    for i, (action, meta) in enumerate(before):
        np.testing.assert_array_equal(store.episode(i)["action"], action)
        assert store.meta(i) == meta
    return len(store)


# --------------------------------------------------------------------------- foundry data convert
@pytest.fixture(scope="module")
def wds_source(tmp_path_factory) -> Path:
    eps = [synthetic_episode(5, seed=i, image_size=24) for i in range(8)]
    return write_synthetic_wds(tmp_path_factory.mktemp("src") / "wds", eps, future=2, samples_per_shard=8)


def _convert_case(wds_source: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    dst = tmp_path / "out.zarr"
    workers = "1" if seed in FAST_SEEDS else rng.choice("12")  # 2: spawned workers die with the process group
    make_tiny_store(dst, lengths=[4, 5], image_size=8)  # the previous good state, replaced with --overwrite
    before = _snapshot(dst)
    cmd = [
        *FOUNDRY,
        "data",
        "convert",
        str(wds_source),
        str(dst),
        "--overwrite",
        "--workers",
        workers,
    ]
    partial = tmp_path / "out.zarr.partial"
    interrupted = _kill_during(cmd, lambda: _committed(partial) >= 1, rng.uniform(0.0, 1.5))
    print(f"convert seed {seed}: {'interrupted' if interrupted else 'finished before the kill'}")
    if interrupted:
        store, _warnings = validate(dst, full_frames=True)
        if len(store) != 40:  # killed before the swap: the previous store is untouched
            assert _assert_prefix(dst, before) == len(before)
            assert partial.exists()
        # else: killed after the swap (maybe while the swapped-out old store was being removed from
        # out.zarr.partial): the new store is complete, and the rerun below must clear the leftover
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    store, warnings = validate(dst, full_frames=True)
    assert len(store) == 40 and not warnings and not partial.exists()


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_kill_convert_overwrite(wds_source, tmp_path, seed):
    _convert_case(wds_source, tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_kill_convert_overwrite_many(wds_source, tmp_path, seed):
    _convert_case(wds_source, tmp_path, seed)


# --------------------------------------------------------------------------- foundry eval demos --append
def _demos_cmd(out: Path, episodes: int, seed_start: int) -> list[str]:
    args = [
        "eval",
        "demos",
        "put_on_plate",
        "--episodes",
        str(episodes),
        "--cameras",
        "scene",
        "--image-size",
        "16",
    ]
    return [*FOUNDRY, *args, "--out", str(out), "--seed-start", str(seed_start), "--append"]


def _demos_case(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    out = tmp_path / "demos.zarr"
    generate_demos({"name": "put_on_plate", "cameras": ["scene"], "image_size": 16}, episodes=2, out=out)
    before = _snapshot(out)
    # Kill after the first appended episode is committed, somewhere within the next ~2 episodes' writes.
    interrupted = _kill_during(
        _demos_cmd(out, 4, 2_000_000), lambda: _committed(out) >= 3, rng.uniform(0.0, 1.5)
    )
    n = _assert_prefix(out, before)
    print(
        f"demos seed {seed}: {'interrupted' if interrupted else 'finished before the kill'} with {n} episodes"
    )
    seeds = [open_store(out).meta(i)["seed"] for i in range(n)]
    assert seeds == [1_000_000, 1_000_001, *range(2_000_000, 2_000_000 + n - 2)]
    assert n == 6 or interrupted
    res = subprocess.run(_demos_cmd(out, 1, 3_000_000), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert _assert_prefix(out, before) == n + 1


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_kill_demos_append(tmp_path, seed):
    _demos_case(tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS[:6])
def test_kill_demos_append_many(tmp_path, seed):
    _demos_case(tmp_path, seed)


# --------------------------------------------------------------------------- EpisodeWriter append loop
WRITER_LOOP = textwrap.dedent(
    """
    import sys
    from foundry_action.store import EpisodeWriter
    from foundry_action.testing import synthetic_episode
    path = sys.argv[1]
    with EpisodeWriter(path, mode="a") as w:
        while True:  # episode i is synthetic_episode(3 + i % 4, seed=i): checkable after any kill
            i = len(w)
            w.append_episode(synthetic_episode(3 + i % 4, seed=i, image_size=8), task=f"t{i}")
    """
)


def _writer_case(tmp_path: Path, seed: int, kills: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "loop.zarr"
    make_tiny_store(path, lengths=[3], image_size=8, with_stats=False)
    interrupted = 0
    for _ in range(kills):
        start = max(_committed(path), 0)
        cmd = [sys.executable, "-c", WRITER_LOOP, str(path)]
        interrupted += _kill_during(cmd, lambda s=start: _committed(path) > s, rng.uniform(0.0, 0.3))
        print(f"writer loop seed {seed}: killed with {_committed(path)} episodes committed")
        store, _ = validate(path, full_frames=True)
        assert len(store) > start
        for i in range(
            1, len(store)
        ):  # episode 0 is the fixture's; every later one is exactly what was written
            np.testing.assert_array_equal(
                store.episode(i)["action"], synthetic_episode(3 + i % 4, seed=i, image_size=8)["action"]
            )
            assert store.meta(i)["task"] == f"t{i}"
    assert interrupted == kills  # an endless loop can only end by the kill


def test_kill_episode_writer_loop(tmp_path):
    _writer_case(tmp_path, seed=0, kills=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 4))
def test_kill_episode_writer_loop_many(tmp_path, seed):
    _writer_case(tmp_path, seed=seed, kills=10)
