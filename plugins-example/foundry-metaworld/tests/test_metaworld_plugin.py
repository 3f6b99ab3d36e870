"""foundry-metaworld: registration, the task contract, scripted demos -> training -> closed-loop evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from foundry_core.errors import ComponentError, ConfigError
from foundry_core.plugins import get_registry
from foundry_metaworld.catalog import DIFFICULTIES, MT10, MT50, tasks_of

REPO = Path(__file__).resolve().parents[3]


def test_every_mt50_task_is_registered_with_its_instruction():
    registry = get_registry()
    names = set(registry.names("task"))
    assert set(MT50) <= names and len(MT50) == 50 and set(MT10) <= set(MT50)
    assert [len(tasks_of(d)) for d in DIFFICULTIES] == [28, 11, 6, 5]
    spec = registry.get("task", "metaworld_pick_place")
    assert spec.provider == "foundry-metaworld"
    assert "pick up the puck" in spec.description
    assert spec.load().task_name == "MetaworldPickPlace"


def test_unknown_task_names_suggest_the_closest():
    with pytest.raises(ComponentError, match="metaworld_pick_place"):
        get_registry().get("task", "metaworld_pick_plce")
    with pytest.raises(ValueError, match="metaworld_drawer_open"):
        tasks_of("metaworld_drawer_opn")


def test_config_errors_name_the_field():
    registry = get_registry()
    with pytest.raises(ConfigError, match="cameras"):
        registry.build("task", {"name": "metaworld_reach", "cameras": ["front"]})
    with pytest.raises(ConfigError, match="max_steps"):
        registry.build("task", {"name": "metaworld_reach", "max_steps": 501})


def test_seeded_reset_observation_and_expert():
    task = get_registry().build("task", {"name": "metaworld_reach", "image_size": 32})
    try:
        first = task.reset(7)
        assert first["images"]["corner"].shape == (32, 32, 3) and first["images"]["corner"].dtype == np.uint8
        assert first["proprio"].shape == (4,) and first["instruction"] == "reach the goal position"
        goal_7 = task._state[36:39].copy()
        task.reset(8)
        assert not np.allclose(goal_7, task._state[36:39]), "another seed must draw another scene"
        again = task.reset(7)
        np.testing.assert_array_equal(task._state[36:39], goal_7)
        np.testing.assert_array_equal(again["images"]["corner"], first["images"]["corner"])
        expert = task.expert()
        while not task.done():
            task.step(expert.act(None))
        assert task.is_success() and task.time < task.time_limit_s
        with pytest.raises(ValueError, match="4 finite values"):
            task.step([0.0, np.nan, 0.0, 0.0])
    finally:
        task.close()


def test_demos_train_and_evaluate_end_to_end(tmp_path):
    """The CI smoke test: 3 scripted demos -> 2 training steps of the MT10 recipe -> 2 evaluated episodes."""
    from foundry_core.config import resolve_config
    from foundry_core.train.run import train_from_config
    from foundry_eval.results import load_results
    from foundry_eval.rollout.runner import run_rollouts
    from foundry_eval.sim.demos import generate_demos

    store = tmp_path / "mt.zarr"
    summary = generate_demos({"name": "metaworld_reach", "image_size": 32}, episodes=3, out=store)
    assert summary.stored == 3 and summary.successes == 3
    overrides = [
        f"run.out_dir={tmp_path / 'run'}", "train.budget.steps=2", "train.batch.global=4",
        "train.batch.per_device=4", "train.progress=false", f"data.mix.0.source.path={store}",
        "data.mix.0.source.image_size=32",
        "model.backbone.encoder.image_size=32", "model.backbone.encoder.width=32",
    ]  # fmt: skip
    run_dir = train_from_config(resolve_config(REPO / "recipes" / "metaworld_mt10.yaml", overrides))
    spec = json.loads((run_dir / "export" / "policy.json").read_text())
    assert spec["action_dim"] == 4 and spec["proprio_dim"] == 4 and spec["is_language_conditioned"]

    paths = run_rollouts(str(run_dir / "export"), [{"name": "metaworld_reach", "max_steps": 40}], 2, tmp_path / "eval",
                         model_name="mt10", execute_steps=4, progress=False)  # fmt: skip
    results = load_results(tmp_path / "eval").results[("mt10", "MetaworldReach")]
    assert [e.status for e in results.episodes if e.status not in ("success", "failure")] == []
    assert len(results.episodes) == 2 and all(e.total_time > 0 for e in results.episodes) and paths


def test_random_policy_uses_the_task_action_format(tmp_path):
    from foundry_eval.rollout.runner import run_rollouts, success_count

    paths = run_rollouts("random", [{"name": "metaworld_reach", "cameras": [], "max_steps": 20}], 2,
                         tmp_path / "eval", model_name="random", progress=False)  # fmt: skip
    assert success_count(paths) == {"MetaworldReach": (0, 2)}
