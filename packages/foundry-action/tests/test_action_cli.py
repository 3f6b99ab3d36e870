"""``foundry data convert | inspect | validate | stats`` through the real CLI (isolated plugin manager)."""

from __future__ import annotations

import numpy as np
import pytest

from foundry_action import plugin
from foundry_action.store import EpisodeWriter, open_store
from foundry_action.testing import synthetic_episode, write_synthetic_wds
from foundry_core.cli.main import build_cli


@pytest.fixture
def cli(foundry_pm):
    foundry_pm.register(plugin, name="foundry-action")
    return build_cli(lambda: foundry_pm)


def test_convert_inspect_validate(cli, cli_runner, tmp_path):
    src = write_synthetic_wds(tmp_path / "wds", [synthetic_episode(5, seed=0), synthetic_episode(4, seed=1)], future=3)
    res = cli_runner.invoke(cli, ["data", "convert", str(src), str(tmp_path / "out.zarr"), "--workers", "1", "--fps", "5"])
    assert res.exit_code == 0, res.output
    assert "episodes: 9" in res.output and "cameras (2)" in res.output
    store = open_store(tmp_path / "out.zarr")
    assert store.fps == 5.0 and len(store) == 9 and store.fields["action"] == (10,)
    res = cli_runner.invoke(cli, ["data", "inspect", str(tmp_path / "out.zarr"), "--out", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0, res.output
    assert "9 episodes" in res.output and (tmp_path / "sheet.png").stat().st_size > 5000
    res = cli_runner.invoke(cli, ["data", "validate", str(tmp_path / "out.zarr")])
    assert res.exit_code == 0 and "ok: 9 episodes" in res.output, res.output
    res = cli_runner.invoke(cli, ["data", "convert", str(src), str(tmp_path / "out.zarr")])
    assert res.exit_code == 2 and "already exists" in res.output


def test_validate_reports_problems(cli, cli_runner, tmp_path, tiny_episodes):
    res = cli_runner.invoke(cli, ["data", "validate", str(tiny_episodes)])
    assert res.exit_code == 0, res.output
    with EpisodeWriter(tiny_episodes, mode="a") as w:  # bypass the writer's checks to plant a NaN
        ep = synthetic_episode(4, seed=5)
        w.append_episode(ep)
        arr = w._root["data/action"]
        arr[76, 3] = np.nan
    res = cli_runner.invoke(cli, ["data", "validate", str(tiny_episodes)])
    assert res.exit_code == 2
    assert "episode 3: field 'action' has NaN/inf at step 1 channel 3" in res.output
    res = cli_runner.invoke(cli, ["data", "stats", str(tmp_path / "nope")])
    assert res.exit_code == 2


def test_stats_command_and_stale_warning(cli, cli_runner, tiny_episodes):
    with EpisodeWriter(tiny_episodes, mode="a") as w:
        w.append_episode(synthetic_episode(4, seed=5))
    res = cli_runner.invoke(cli, ["data", "validate", str(tiny_episodes)])
    assert "stats were computed on 3 episodes" in res.output
    res = cli_runner.invoke(cli, ["data", "stats", str(tiny_episodes), "--window", "1", "4"])
    assert res.exit_code == 0 and "4 episodes" in res.output, res.output
    res = cli_runner.invoke(cli, ["data", "validate", str(tiny_episodes)])
    assert "warning" not in res.output
