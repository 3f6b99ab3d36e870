"""Closed-loop evaluation during training: the callback exports the current weights every N steps, rolls
them out on the fake simulator and logs success with its interval into metrics.jsonl."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")


def test_closed_loop_eval_every_n_steps(foundry_pm, tiny_episodes, tmp_path):
    import foundry_action.plugin
    import foundry_eval.plugin
    from foundry_action.tiny_backbone import register_tiny_backbone
    from foundry_core.train.run import train_from_config

    torch.set_num_threads(1)
    foundry_pm.register(foundry_action.plugin, name="foundry-action")
    foundry_pm.register(foundry_eval.plugin, name="foundry-eval")
    register_tiny_backbone(foundry_pm)
    robot = {"name": "zarr_episodes", "path": str(tiny_episodes), "past": 1, "future": 3, "image_offsets": [-1, 0]}
    callback = {"name": "closed_loop_eval", "every_steps": 2, "episodes": 1, "execute_steps": 2,
                "tasks": [{"name": "point_reach", "time_limit_s": 1.0}]}
    raw = {
        "run": {"name": "cl", "out_dir": str(tmp_path / "run"), "device": "cpu"},
        "model": {"name": "vla", "backbone": {"name": "tiny_test", "width": 16},
                  "expert": {"name": "flow_matching", "preset": "debug", "inference_steps": 2}, "data": robot},
        "data": {"mix": [{"source": robot, "weight": 1.0}]},
        "train": {"budget": {"steps": 3}, "batch": {"global": 4, "per_device": 4}, "log_every": 1,
                  "progress": False, "callbacks": [callback]},
    }
    run_dir = train_from_config(raw, pm=foundry_pm)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    closed = [r for r in rows if "closed_loop/PointReach/success" in r]
    assert [r["step"] for r in closed] == [2]  # every 2 steps of 3
    for r in closed:
        assert r["closed_loop/PointReach/n"] == 1
        assert 0.0 <= r["closed_loop/PointReach/ci_low"] <= r["closed_loop/PointReach/success"]
        assert r["closed_loop/PointReach/success"] <= r["closed_loop/PointReach/ci_high"] <= 1.0
    for step in (2,):
        folder = run_dir / "closed_loop" / f"step_{step:07d}"
        assert (folder / "export" / "model.safetensors").is_file() and (folder / "export" / "stats").is_dir()
        (results,) = folder.glob("results/*/*/rollouts/*/results.json")
        assert json.loads(results.read_text())["num_crashed"] == 0
    assert (run_dir / "export" / "model.safetensors").is_file()  # the final export is still the run's own


def test_closed_loop_eval_config_errors(foundry_pm):
    import foundry_eval.plugin
    from foundry_core.errors import ConfigError
    from foundry_core.registry import collect

    foundry_pm.register(foundry_eval.plugin, name="foundry-eval")
    registry = collect(foundry_pm)
    with pytest.raises(ConfigError, match="every_steps must be >= 1"):
        registry.node("callback", {"name": "closed_loop_eval", "every_steps": 0, "tasks": ["point_reach"]})
    with pytest.raises(ConfigError, match="tasks: name at least one task"):
        registry.node("callback", {"name": "closed_loop_eval", "every_steps": 5, "tasks": []})
