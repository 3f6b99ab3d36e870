"""The one trainer trains a vla on an episode store (loss goes down) and its export serves as a Policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from foundry_action.executor import ChunkExecutor
from foundry_action.policy import Policy
from foundry_action.tiny_backbone import register_tiny_backbone
from foundry_core.registry import collect

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def test_train_export_and_serve(foundry_pm, tiny_episodes, tmp_path):
    import foundry_action.plugin
    from foundry_core.train.run import train_from_config

    foundry_pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(foundry_pm)
    robot = {"name": "zarr_episodes", "path": str(tiny_episodes), "past": 1, "future": 3, "image_offsets": [-1, 0]}
    raw = {
        "run": {"name": "vla_test", "out_dir": str(tmp_path / "run"), "device": "cpu"},
        "model": {
            "name": "vla",
            "backbone": {"name": "tiny_test", "width": 16},
            "expert": {"name": "flow_matching", "preset": "debug", "num_action_head_repeats": 2},
            "data": robot,
        },
        "data": {"mix": [{"source": robot, "weight": 1.0}]},
        "train": {"budget": {"steps": 40}, "batch": {"global": 16, "per_device": 16}, "optim": {"name": "adamw", "lr": 3.0e-3},
                  "schedule": {"name": "constant", "warmup": 0.0}, "log_every": 5, "progress": False},
    }
    run_dir = train_from_config(raw, pm=foundry_pm)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 6 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    policy = Policy.from_pretrained(run_dir / "export", registry=collect(foundry_pm))
    assert policy.metadata()["expert"] == "flow_matching"
    from foundry_action.store import open_store

    ep = open_store(tiny_episodes).episode(0)
    ex = ChunkExecutor(policy, execute_steps=2)
    for t in range(3):
        obs = {"images": {c: ep[f"camera/{c}"][t] for c in ("scene", "wrist")}, "proprio": ep["proprio"][t],
               "instruction": "do thing number 0"}
        assert ex.step(obs).shape == (10,)


def test_the_robot_source_is_built_once_per_run(foundry_pm, tiny_episodes, tmp_path, monkeypatch):
    """The trainer hands the mix's robot source to the vla (no model.data): one construction per run
    (training, checkpoint, export). A model that names its own copy in model.data builds three."""
    import foundry_action.plugin
    from foundry_action.data_source import ZarrEpisodes
    from foundry_core.train.run import train_from_config

    foundry_pm.register(foundry_action.plugin, name="foundry-action")
    register_tiny_backbone(foundry_pm)
    built = []
    real_init = ZarrEpisodes.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ZarrEpisodes, "__init__", counting_init)
    robot = {"name": "zarr_episodes", "path": str(tiny_episodes), "past": 0, "future": 3, "image_offsets": [0]}

    def run(name: str, model_data: dict | None) -> int:
        built.clear()
        raw = {
            "run": {"name": name, "out_dir": str(tmp_path / name), "device": "cpu"},
            "model": {"name": "vla", "backbone": {"name": "tiny_test", "width": 8},
                      "expert": {"name": "l1_regression", "preset": "tiny"}},
            "data": {"mix": [{"source": robot}]},
            "train": {"budget": {"steps": 1}, "batch": {"global": 4, "per_device": 4}, "progress": False},
        }
        if model_data is not None:
            raw["model"]["data"] = model_data
        policy = Policy.from_pretrained(train_from_config(raw, pm=foundry_pm) / "export", registry=collect(foundry_pm))
        assert policy.metadata()["action_dim"] == 10  # the metadata reached the model and its export
        return len(built)

    assert run("handed", None) == 1
    assert run("own_copy", robot) == 3  # the mix, the model, the export's rebuild
