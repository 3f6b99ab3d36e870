"""recipes/manipulation.yaml cannot rot: its header's data commands run (one episode each), record push
without the post-success tail and pick with it (what took push from 3/20 to 12/20), the recipe trains on
that store and its evaluation command scores the export."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("foundry_vision")
pytest.importorskip("pydrake")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "manipulation.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def header_commands(text: str) -> list[list[str]]:
    """The ``foundry ...`` commands in the recipe's leading comment, continuation lines joined."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    commands = []
    for line in joined.splitlines():
        at = line.find("foundry ")
        if at >= 0 and (at == 0 or line[at - 1] in " :"):
            commands.append(shlex.split(line[at:]))
    return commands


def with_option(args: list[str], name: str, value: str) -> list[str]:
    assert name in args, f"{name} missing from {args}"
    out = list(args)
    out[out.index(name) + 1] = value
    return out


def test_manipulation_recipe_commands_run(tmp_path, cli_runner):
    from foundry_action.store import open_store
    from foundry_core.cli.main import build_cli
    from foundry_core.config import resolve_config
    from foundry_core.train.run import train_from_config

    commands = header_commands(RECIPE.read_text())
    demos = [c[1:] for c in commands if c[1:3] == ["eval", "demos"]]
    runs = [c[1:] for c in commands if c[1:3] == ["eval", "run"]]
    assert len(demos) == 4 and len(runs) == 1, commands
    store_path = tmp_path / "manipulation.zarr"
    for args in demos:
        args = with_option(with_option(args, "--episodes", "1"), "--out", str(store_path))
        result = cli_runner.invoke(build_cli(), args)
        assert result.exit_code == 0, (args, result.output)

    store = open_store(store_path)
    tails = {(run["task"], run["noise_xyz"] > 0): run["tail_steps"] for run in store.attrs["demo_runs"]}
    assert tails == {
        ("push_to_target", False): 0,
        ("pick_place_bin", False): 8,
        ("push_to_target", True): 0,
        ("pick_place_bin", True): 8,
    }
    for i in range(len(store)):  # a push episode ends at its first success, a pick one 8 steps later
        meta = store.meta(i)
        tail = 0 if meta["task"] == "push_to_target" else 8
        assert meta["success"] and store.episode_length(i) == meta["success_step"] + tail, meta

    cfg = resolve_config(
        RECIPE,
        [
            f"data.mix.0.source.path={store_path}",
            f"run.out_dir={tmp_path / 'run'}",
            "train.budget.steps=2",
            "train.log_every=1",
            "train.progress=false",
        ],
    )
    run_dir = train_from_config(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and np.isfinite(losses).all(), losses

    args = with_option(runs[0], "--policy", str(run_dir / "export"))
    args = with_option(with_option(args, "--episodes", "1"), "--out", str(tmp_path / "eval"))
    result = cli_runner.invoke(build_cli(), args)
    assert result.exit_code == 0, (args, result.output)
    results = sorted((tmp_path / "eval").rglob("results.json"))
    assert len(results) == 2  # one per task
    for path in results:
        evaluations = json.loads(path.read_text())["evaluations"]
        assert len(evaluations) == 1 and evaluations[0]["failure_message"] is None, evaluations
