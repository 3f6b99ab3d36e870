"""``wds_robot_shards``: batches straight from reference robotics shards (synthetic and the shared LBM shard)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from foundry_action.testing import synthetic_episode, write_synthetic_wds
from foundry_action.wds_source import WdsRobotShards
from foundry_core.errors import DataError
from foundry_core.registry import BuildContext

LBM_ACTIONS = [
    "robot__action__poses__right::panda__xyz",
    "robot__action__poses__right::panda__rot_6d",
    "robot__action__grippers__right::panda_hand",
]
LBM_PROPRIO = [
    "robot__actual__poses__right::panda__xyz",
    "robot__actual__poses__right::panda__rot_6d",
    "robot__actual__grippers__right::panda_hand",
]


def _jpeg(frame):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_synthetic_shards_batches_values_masks_and_crop(tmp_path):
    eps = [synthetic_episode(6, seed=0), synthetic_episode(5, seed=1)]
    src = write_synthetic_wds(tmp_path / "wds", eps, future=3, timesteps=True, samples_per_shard=4)
    source = WdsRobotShards(
        WdsRobotShards.Config(
            path=str(src),
            past=1,
            future=2,
            image_offsets=[-1, 0],
            action_field="action",
            proprio_field="proprio",
        )
    )
    assert len(source) == 11 and source.sampler.cameras == ["scene", "wrist"]
    keys = [key for _s, key, _m in source.sampler.refs]
    i = keys.index("e0000t00003")  # anchor 3 of episode 0: window t = 2..5
    batch = source.make_batch(np.array([i, keys.index("e0000t00000")]), torch.Generator().manual_seed(0))
    assert batch["images"].shape == (2, 4, 3, 32, 32) and batch["actions"].shape == (2, 4, 10)
    raw = source.stats.unnormalize("action", batch["actions"][0].numpy())
    np.testing.assert_allclose(raw, eps[0]["action"][2:6], rtol=1e-5, atol=1e-5)
    assert batch["future_mask"][0].tolist() == [False, True, True, True]
    assert batch["image_mask"].tolist() == [
        [True, True, True, True],
        [False, False, True, True],
    ]  # t-1 clipped at 0
    np.testing.assert_array_equal(
        batch["images"][0, 0].permute(1, 2, 0).numpy(), _jpeg(eps[0]["camera/scene"][2])
    )
    assert not batch["images"][1, :2].any()  # the invalid (clipped) slot is black, not a copy
    again = source.batch_at(8, 4, rank=0, world_size=1, seed=3)
    torch.testing.assert_close(
        again["actions"], source.batch_at(8, 4, rank=0, world_size=1, seed=3)["actions"]
    )
    with pytest.raises(DataError, match=r"holds past 1 / future 3 steps; past 1 / future 5 were asked"):
        WdsRobotShards(
            WdsRobotShards.Config(path=str(src), future=5, action_field="action", proprio_field="proprio")
        )
    with pytest.raises(DataError, match=r"no images at offset -2"):
        WdsRobotShards(
            WdsRobotShards.Config(
                path=str(src), future=2, image_offsets=[-2, 0], action_field="action", proprio_field="proprio"
            )
        )
    val = WdsRobotShards(
        WdsRobotShards.Config(
            path=str(src),
            future=2,
            action_field="action",
            proprio_field="proprio",
            split="val",
            val_fraction=0.5,
        )
    )
    ids = {source.sampler.metas[e]["episode_id"] for e in val.sampler.samples}
    assert len(ids) == 1 and len(val) in (5, 6)  # whole episodes are held out, never single windows


def test_shared_lbm_shard_trains_a_vla_unconverted(shared_data, action_registry):
    src = shared_data / "vla_foundry" / "small_lbm_dataset"
    data = {
        "name": "wds_robot_shards",
        "path": str(src),
        "past": 1,
        "future": 7,
        "image_offsets": [-1, 0],
        "cameras": ["scene_right_0", "wrist_left_plus"],
        "image_size": 32,
        "action_field": LBM_ACTIONS,
        "proprio_field": LBM_PROPRIO,
        "instruction": "random",
    }
    source = action_registry.build("data_source", data, BuildContext(action_registry))
    assert len(source) == 5
    batch = next(source.batches(5, rank=0, world_size=1, seed=0))
    assert batch["images"].shape == (5, 4, 3, 32, 32) and batch["image_mask"].all()
    assert batch["actions"].shape == (5, 9, 10) and all(batch["instruction"])
    torch.manual_seed(0)
    node = {
        "name": "vla",
        "backbone": {"name": "tiny_test", "width": 16},
        "expert": {"name": "flow_matching", "preset": "debug"},
        "data": data,
    }
    model = action_registry.build("model", node, BuildContext(action_registry))
    assert model.spec["cameras"] == ["scene_right_0", "wrist_left_plus"] and model.spec["action_dim"] == 10
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
