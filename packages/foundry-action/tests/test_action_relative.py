"""Relative (anchor-frame) actions and per-timestep normalization: data source, stats, policy runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundry_action.data_source import ZarrEpisodes
from foundry_action.policy import Policy
from foundry_action.rotations import absolute_to_relative, matrix_to_rot6d, relative_to_absolute
from foundry_action.store import EpisodeWriter
from foundry_action.testing import TINY_SEMANTICS, make_tiny_store
from foundry_core.config import parse_dataclass
from foundry_core.errors import ConfigError, DataError
from foundry_core.registry import BuildContext


def _rz(yaw: np.ndarray) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    z, o = np.zeros_like(yaw), np.ones_like(yaw)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _poses(xyz: np.ndarray, yaw: np.ndarray, grip: np.ndarray) -> np.ndarray:
    return np.concatenate([xyz, matrix_to_rot6d(_rz(yaw)), grip[:, None]], axis=1).astype(np.float32)


def pose_store(path, lengths=(18, 24, 30)):
    """Episodes whose action/proprio are real poses: the gripper drives toward a goal while turning."""
    with EpisodeWriter(path, fps=10.0, fields={"action": (10,), "proprio": (10,)},
                       cameras={"scene": (16, 16), "wrist": (16, 16)}, semantics=TINY_SEMANTICS, mode="w") as w:
        for e, n in enumerate(lengths):
            rng = np.random.default_rng(e)
            t = np.linspace(0, 1, n)[:, None]
            xyz = rng.uniform(-0.2, 0.2, 3) + (rng.uniform(-0.2, 0.2, 3) - rng.uniform(-0.2, 0.2, 3)) * t
            yaw = rng.uniform(-1, 1) + rng.uniform(-1, 1) * t[:, 0]
            grip = np.where(t[:, 0] > 0.5, 0.0, 0.08)
            proprio = _poses(xyz, yaw, grip)
            action = np.concatenate([proprio[1:], proprio[-1:]])  # command = the next pose
            frames = {f"camera/{c}": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8) for c in ("scene", "wrist")}
            w.append_episode({"action": action, "proprio": proprio, **frames}, task="reach",
                             instruction=f"go {e}", success=True, source="synthetic")
    return path


def test_relative_round_trip_broadcasts_over_batches():
    rng = np.random.default_rng(0)
    pose = _poses(rng.normal(size=(4, 3)), rng.uniform(-3, 3, 4), rng.uniform(0, 0.08, 4))
    absolute = np.stack([_poses(rng.normal(size=(5, 3)), rng.uniform(-3, 3, 5), rng.uniform(0, 0.08, 5)) for _ in range(4)])
    rel = absolute_to_relative(absolute, pose[:, None])
    assert rel.shape == (4, 5, 10)
    np.testing.assert_allclose(rel[..., 9], absolute[..., 9])  # the gripper stays absolute
    np.testing.assert_allclose(relative_to_absolute(rel, pose[:, None]), absolute, atol=1e-5)
    # the pose itself is the identity in its own frame
    ident = absolute_to_relative(pose, pose)
    np.testing.assert_allclose(ident[:, :9], np.tile([0, 0, 0, 1, 0, 0, 0, 1, 0], (4, 1)), atol=1e-6)


def test_source_relative_actions_invert_to_the_stored_actions(tmp_path):
    store = pose_store(tmp_path / "poses.zarr")
    src = ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {"path": str(store), "past": 1, "future": 6,
                                                             "relative_actions": True}))
    assert src.stats.window == (1, 6) and src.metadata()["relative_actions"] is True
    idx = np.arange(len(src))
    b = src.make_batch(idx, torch.Generator().manual_seed(0))
    wb = src.sampler.windows(idx)
    rel = src.stats.unnormalize_window("action", b["actions"].numpy())
    anchor_pose = wb.proprio[:, 1:2]
    back = relative_to_absolute(rel, anchor_pose)
    valid = (b["past_mask"] | b["future_mask"]).numpy()
    np.testing.assert_allclose(back[valid], wb.actions[valid], atol=1e-4)
    # normalized per position: each valid position is ~zero-mean, unit-std; later steps spread more in metres
    norm = b["actions"].numpy()
    fut = b["future_mask"].numpy()
    for k in (1, 7):
        sel = norm[fut[:, k], k, :3]
        assert np.abs(sel.mean(0)).max() < 0.1 and np.abs(sel.std(0) - 1).max() < 0.1
    spread = [src.stats.per_timestep["action"][k].std[:3].mean() for k in (1, 4, 7)]
    assert spread[0] < spread[1] < spread[2]


def test_per_timestep_stats_without_relative(tmp_path):
    store = pose_store(tmp_path / "poses.zarr")
    src = ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {"path": str(store), "past": 2, "future": 3,
                                                             "per_timestep_stats": True}))
    b = src.make_batch(np.arange(len(src)), torch.Generator().manual_seed(0))
    wb = src.sampler.windows(np.arange(len(src)))
    np.testing.assert_allclose(src.stats.unnormalize_window("action", b["actions"].numpy()), wb.actions, atol=1e-5)
    with pytest.raises(DataError, match="window of shape"):
        src.stats.normalize_window("action", np.zeros((3, 10), np.float32))


def test_relative_actions_need_pose_fields(tmp_path):
    store = make_tiny_store(tmp_path / "seven.zarr", dim=7)
    with pytest.raises(DataError, match="relative actions need .* 7 action and 7 proprio"):
        ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {"path": str(store), "relative_actions": True}))


def test_policy_with_relative_actions_matches_training_and_composes_back(action_registry, tmp_path):
    from foundry_action.store import open_store
    from foundry_core.export import export_model

    torch.set_num_threads(1)
    store = pose_store(tmp_path / "poses.zarr")
    node = {"name": "vla", "backbone": {"name": "tiny_test", "width": 16},
            "expert": {"name": "l1_regression", "preset": "debug"},
            "data": {"name": "zarr_episodes", "path": str(store), "past": 2, "future": 3, "relative_actions": True}}
    torch.manual_seed(0)
    model = action_registry.build("model", node, BuildContext(action_registry))
    policy = Policy.from_pretrained(export_model(model, node, tmp_path / "export"), registry=action_registry)
    assert policy.metadata()["relative_actions"] is True
    source = action_registry.build("data_source", node["data"], BuildContext(action_registry))
    ep = open_store(store).episode(1)
    anchor = 6
    ref = source.make_batch(np.array([18 + anchor]), torch.Generator().manual_seed(0))  # episode 1 starts at 18
    assert int(ref["episode"][0]) == 1 and int(ref["anchor"][0]) == anchor
    for t in range(anchor + 1):
        policy.observe({"images": {c: ep[f"camera/{c}"][t] for c in ("scene", "wrist")},
                        "proprio": ep["proprio"][t], "instruction": "go 1"})
        if t < anchor:
            policy.record_action(ep["action"][t])
    got = policy.batch()
    torch.testing.assert_close(got["past_mask"], ref["past_mask"])
    torch.testing.assert_close(got["actions"][got["past_mask"]], ref["actions"][ref["past_mask"]], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["proprio"], ref["proprio"])
    torch.manual_seed(1)
    norm = model.predict(got)[0].numpy()
    rel = policy.stats.unnormalize_window("action", norm)[2:]
    np.testing.assert_allclose(policy.plan(), relative_to_absolute(rel, ep["proprio"][anchor]), atol=1e-5)


def test_tasks_filter_selects_episodes_and_names_the_choices(tiny_episodes):
    src = ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {"path": str(tiny_episodes), "past": 1, "future": 2,
                                                             "tasks": ["task_1"]}))
    assert set(src.sampler.index_episode.tolist()) == {1}  # episodes 0 and 2 are task_0
    with pytest.raises(Exception, match=r"no episode has a task in tasks=\['pick'\].*task_0"):
        ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {"path": str(tiny_episodes), "tasks": ["pick"]}))


def test_task_weights_mix_tasks_within_batches(tiny_episodes):
    node = {"path": str(tiny_episodes), "past": 1, "future": 2}
    src = ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {**node, "task_weights": {"task_0": 0.25, "task_1": 0.75}}))
    batch = next(src.batches(400, rank=0, world_size=1, seed=0))
    share = sum(t == "task_1" for t in batch["task"]) / 400
    assert 0.68 < share < 0.82, share  # task_1 has 1 of 3 episodes, but 3/4 of the samples
    again = next(ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {**node, "task_weights": {"task_0": 0.25, "task_1": 0.75}}))
                 .batches(400, rank=0, world_size=1, seed=0))
    assert torch.equal(batch["episode"], again["episode"]) and torch.equal(batch["anchor"], again["anchor"])
    only = next(ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {**node, "task_weights": {"task_1": 1.0}}))
                .batches(50, rank=0, world_size=1, seed=0))
    assert set(only["task"]) == {"task_1"}
    with pytest.raises(ConfigError, match=r"task_weights names \['pick'\].*task_0"):
        ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {**node, "task_weights": {"pick": 1.0}}))
    with pytest.raises(ConfigError, match="task_weights must be >= 0 with at least one > 0"):
        parse_dataclass(ZarrEpisodes.Config, {**node, "task_weights": {"task_0": -1.0, "task_1": 1.0}})


def test_camera_serials_of_the_store_reach_the_policy_metadata(tmp_path):
    """A store that kept LBM's camera_id_to_semantic_name passes it (for the cameras used) into the spec
    that exports record, so `foundry serve --protocol lbm` can map serials without a --camera-map."""
    store = make_tiny_store(tmp_path / "s.zarr", lengths=(12,))
    with EpisodeWriter(store, mode="a") as w:
        w.update_attrs({"camera_id_to_semantic_name": {"SER_S": "scene", "SER_W": "wrist", "SER_X": "unused"}})
    cfg = {"path": str(store), "past": 1, "future": 2, "cameras": ["scene"]}
    meta = ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, cfg)).metadata()
    assert meta["cameras"] == ["scene"] and meta["camera_id_to_semantic_name"] == {"SER_S": "scene"}
    with EpisodeWriter(store, mode="a") as w:  # the spartan converter's {name: camera id}
        w.update_attrs({"camera_id_to_semantic_name": {}, "spartan_cameras": {"scene": "6CD146030E99"}})
    meta = ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, cfg)).metadata()
    assert meta["camera_id_to_semantic_name"] == {"6CD146030E99": "scene"}
    plain = make_tiny_store(tmp_path / "p.zarr", lengths=(12,))
    assert "camera_id_to_semantic_name" not in ZarrEpisodes(parse_dataclass(ZarrEpisodes.Config, {**cfg, "path": str(plain)})).metadata()
