"""recipes/vla_lbm_spartan_debug.yaml trains on converted LBM spartan episodes (a fixture written from
the documented layout) and its export acts as a policy on a stored observation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("foundry_vision")

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread, no spin contention


def test_spartan_recipe_converts_trains_and_serves(tmp_path):
    from foundry_action.convert import ConvertOptions, convert
    from foundry_action.policy import Policy
    from foundry_action.store import open_store
    from foundry_action.testing.spartan import write_spartan_tree
    from foundry_core.config import resolve_config
    from foundry_core.train.run import train_from_config

    write_spartan_tree(tmp_path / "lbm", episodes=2, length=12, size=(24, 32))
    store_path = tmp_path / "lbm.zarr"
    convert(
        tmp_path / "lbm", store_path, options=ConvertOptions(cameras=["scene_right_0", "wrist_left_plus"])
    )
    cfg = resolve_config(
        ROOT / "recipes" / "vla_lbm_spartan_debug.yaml",
        [
            f"data.mix.0.source.path={store_path}",
            f"run.out_dir={tmp_path / 'run'}",
            "train.budget.steps=4",
            "train.log_every=1",
            "train.progress=false",
        ],
    )
    run_dir = train_from_config(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses)), losses
    policy = Policy.from_pretrained(run_dir / "export", resize_images=True)  # 24x32 frames, trained at 32x32
    meta = policy.metadata()
    assert meta["cameras"] == ["scene_right_0", "wrist_left_plus"] and meta["action_dim"] == 20
    ep = open_store(store_path).episode(0)
    proprio = np.concatenate([ep[f][3].reshape(-1) for f in meta["proprio_fields"]])
    obs = {
        "images": {c: ep[f"camera/{c}"][3] for c in meta["cameras"]},
        "proprio": proprio,
        "instruction": "",
    }
    chunk = np.asarray(policy.act(obs))
    assert chunk.shape[-1] == 20 and np.isfinite(chunk).all()
