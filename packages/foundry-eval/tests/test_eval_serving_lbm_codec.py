"""LBM codec and batcher units: policies on LBM's own field names (joints, desired poses, both arms),
the spartan 20-D action layout, camera-map parsing, and the cross-client batcher's scheduling."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from foundry_core.errors import ConfigError
from foundry_eval.serving.lbm_client import encode_observation
from foundry_eval.serving.lbm_codec import LbmLayout

ROT6D_I = [1.0, 0, 0, 0, 1, 0]


def observation(desired_right_z: float = 0.2):
    """Both arms (right at y = 0, left at y = 0.3), grippers 0.04, no cameras."""
    proprio = np.array([0.13, 0.0, 0.2, *ROT6D_I, 0.04, 0.13, 0.3, 0.2, *ROT6D_I, 0.04])
    msg = encode_observation({"proprio": proprio, "images": {}}, ["right::panda", "left::panda"])
    msg.robot.desired.pose_status[0].pose.translation[2] = desired_right_z
    return msg


def test_lbm_named_fields_read_joints_and_command_both_arms():
    """A policy trained on LBM's own field names (the reference shards): every field read from the robot
    it names (joint states included), actions written to each arm's pose and gripper."""
    from foundry_eval.serving.codec import PolicyOutputError, RequestError
    from foundry_eval.serving.lbm_codec import decode_observation, encode_action

    arms = ("left::panda", "right::panda")
    proprio = [(f"robot__actual__poses__{a}__xyz", 3) for a in arms] + [
        (f"robot__actual__poses__{a}__rot_6d", 6) for a in arms
    ]
    proprio += [(f"robot__actual__grippers__{a}_hand", 1) for a in arms]
    proprio += [
        ("robot__actual__joint_position__left::panda", 7),
        ("robot__desired__poses__right::panda__xyz", 3),
    ]
    action = [(f"robot__desired__poses__{a}__xyz", 3) for a in arms]
    action += [(f"robot__desired__poses__{a}__rot_6d", 6) for a in arms]
    action += [(f"robot__desired__grippers__{a}_hand", 1) for a in arms]
    dims = dict(proprio + action)
    layout = LbmLayout.from_metadata(
        {
            "proprio_fields": [n for n, _ in proprio],
            "action_fields": [n for n, _ in action],
            "field_dims": dims,
        }
    )
    assert layout.controlled_arms() == ["left::panda", "right::panda"]
    msg = observation()
    msg.robot.actual.pose_status[1].joint_position.extend(np.arange(7.0).tolist())  # left::panda
    msg.robot.desired.pose_status[0].pose.translation[2] = 0.9  # right::panda's commanded z
    obs = decode_observation(msg, layout)
    p = obs["proprio"]
    assert p.shape == (3 + 3 + 6 + 6 + 1 + 1 + 7 + 3,) and obs["images"] == {}
    np.testing.assert_allclose(p[:6], [0.13, 0.3, 0.2, 0.13, 0.0, 0.2], atol=1e-6)  # left xyz, right xyz
    np.testing.assert_allclose(p[6:12], [1, 0, 0, 0, 1, 0])  # left rot6d = the first two rows of I
    np.testing.assert_allclose(p[20:27], np.arange(7.0))
    np.testing.assert_allclose(p[27:], [0.13, 0.0, 0.9], atol=1e-6)  # the desired pose, not the actual one
    del msg.robot.actual.pose_status[1].joint_position[:]
    with pytest.raises(RequestError, match=r"pose_status\['left::panda'\].joint_position: expected 7 values"):
        decode_observation(msg, layout)
    vec = np.concatenate(
        [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0, 1, 0, -1, 0, 0], [1, 0, 0, 0, 1, 0], [0.01, 0.07]]
    )
    out = encode_action(vec.astype(np.float32), layout)
    poses = {s.robot_name: s.pose for s in out.pose_status}
    grippers = {g.gripper_name: g.gripper_position for g in out.gripper_status}
    np.testing.assert_allclose(poses["left::panda"].translation, [0.1, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(poses["left::panda"].rotation, [0, 1, 0, -1, 0, 0, 0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(poses["right::panda"].translation, [0.4, 0.5, 0.6], atol=1e-6)
    assert grippers == pytest.approx({"left::panda_hand": 0.01, "right::panda_hand": 0.07})
    with pytest.raises(PolicyOutputError, match="non-finite"):
        encode_action(np.full(20, np.nan, np.float32), layout)
    with pytest.raises(ConfigError, match="only desired poses and grippers can be commanded"):
        LbmLayout.from_metadata(
            {
                "proprio_fields": ["proprio"],
                "action_fields": ["robot__actual__joint_position__left::panda"],
                "field_dims": {"proprio": 20, "robot__actual__joint_position__left::panda": 7},
            }
        )


def test_spartan_action_layout_poses_then_grippers(tmp_path):
    """LBM's 20-D action (right xyz, right rot6d, left xyz, left rot6d, right opening, left opening), as the
    spartan converter stores it in one field, is recognised from its semantics (or the map's flat_layout)."""
    from foundry_action.testing import TINY_SEMANTICS
    from foundry_eval.serving.lbm_camera_map import load_camera_map
    from foundry_eval.serving.lbm_codec import decode_observation, encode_action

    spartan = (
        "LBM absolute action: right xyz(3) [m], right rot6d(6), left xyz(3) [m], left rot6d(6), right gripper, "
        "left gripper opening [m] (rot6d as in the source data)"
    )
    md = {
        "proprio_fields": ["proprio"],
        "action_fields": ["action"],
        "field_dims": {"proprio": 20, "action": 20},
    }
    layout = LbmLayout.from_metadata(
        {**md, "semantics": {"action": spartan, "proprio": TINY_SEMANTICS["proprio"]}}
    )
    assert layout.flat_layouts == {"proprio": "per_arm", "action": "poses_then_grippers"}
    rot_r, rot_l = [0, 1, 0, -1, 0, 0], [1, 0, 0, 0, 0, 1]
    vec = np.array([0.1, 0.2, 0.3, *rot_r, 0.4, 0.5, 0.6, *rot_l, 0.01, 0.07], np.float32)
    out = encode_action(vec, layout)
    poses = {s.robot_name: s.pose for s in out.pose_status}
    grippers = {g.gripper_name: g.gripper_position for g in out.gripper_status}
    np.testing.assert_allclose(poses["right::panda"].translation, [0.1, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(poses["right::panda"].rotation, [0, 1, 0, -1, 0, 0, 0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(poses["left::panda"].translation, [0.4, 0.5, 0.6], atol=1e-6)
    np.testing.assert_allclose(poses["left::panda"].rotation, [1, 0, 0, 0, 0, 1, 0, -1, 0], atol=1e-6)
    assert grippers == pytest.approx({"right::panda_hand": 0.01, "left::panda_hand": 0.07})
    # Foundry's per-arm proprio: right arm's 10 values, then the left's
    p = decode_observation(observation(), layout)["proprio"]
    np.testing.assert_allclose(p[[0, 9, 10, 19]], [0.13, 0.04, 0.13, 0.04], atol=1e-6)
    cmap = tmp_path / "map.yaml"
    cmap.write_text("cameras: {}\nflat_layout: poses_then_grippers\n")
    forced = LbmLayout.from_metadata(md, load_camera_map(cmap))
    assert forced.flat_layouts == {"proprio": "poses_then_grippers", "action": "poses_then_grippers"}
    p = decode_observation(observation(), forced)["proprio"]
    np.testing.assert_allclose(p[[0, 9, 18, 19]], [0.13, 0.13, 0.04, 0.04], atol=1e-6)
    cmap.write_text("cameras: {}\nflat_layout: lbm\n")
    with pytest.raises(ConfigError, match="flat_layout 'lbm' is not one of"):
        load_camera_map(cmap)


def test_batcher_closes_full_batches_early_and_survives_errors(monkeypatch):
    import time

    import foundry_action.policy
    from foundry_eval.serving.batching import PlanBatcher

    calls = []

    def fake_plan_batch(policies):
        calls.append(list(policies))
        if "bad" in policies:
            raise ValueError("model failed")
        return [np.full(2, p) for p in policies]

    monkeypatch.setattr(foundry_action.policy, "plan_batch", fake_plan_batch)
    batcher = PlanBatcher(max_size=8, timeout_s=30.0, live=lambda: 2)
    results = {}
    start = time.monotonic()
    threads = [threading.Thread(target=lambda p=p: results.update({p: batcher.plan(p)})) for p in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert time.monotonic() - start < 10  # both live episodes were waiting: no 30 s timeout
    assert calls == [[1.0, 2.0]] or sorted(map(len, calls)) == [1, 1]
    assert results[1.0].tolist() == [1.0, 1.0] and results[2.0].tolist() == [2.0, 2.0]
    batcher.live = lambda: 1
    with pytest.raises(ValueError, match="model failed"):
        batcher.plan("bad")
    assert batcher.plan(3.0).tolist() == [3.0, 3.0]  # the worker keeps serving
    batcher.close()


def test_instruction_from_the_step_or_the_server_default():
    from foundry_eval.serving.codec import RequestError
    from foundry_eval.serving.lbm_codec import decode_observation

    layout = LbmLayout.from_metadata({"proprio_dim": 20, "is_language_conditioned": True})
    msg = observation()
    with pytest.raises(RequestError, match=r"observation.language_instruction: .*--instruction TEXT"):
        decode_observation(msg, layout)
    layout.default_instruction = "put the mug on the saucer"
    assert decode_observation(msg, layout)["instruction"] == "put the mug on the saucer"
    msg.use_language_instruction, msg.language_instruction = True, "stack the blocks"
    assert decode_observation(msg, layout)["instruction"] == "stack the blocks"  # the Step's own wins
    msg.use_language_instruction = False  # present but not to be used
    assert decode_observation(msg, layout)["instruction"] == "put the mug on the saucer"
