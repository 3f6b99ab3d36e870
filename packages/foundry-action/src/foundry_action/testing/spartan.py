"""Test support: write tiny LBM "diffusion spartan" episode folders from the documented layout (LBM_EVAL.md).

``write_spartan_episode`` writes one ``.../tasks/<Skill>/<station>/sim/bc/teleop/<date>/diffusion_spartan/
episode_<n>/processed/`` folder with every file the public data has (npz, yaml, json). ``skill_type`` in
``actions.npz`` is a pickled object array holding a :class:`Tripwire`, whose unpickling raises: a reader
that unpickles it fails loudly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

#: camera id -> semantic name, ids shaped like the real ones.
DEFAULT_CAMERAS = {"6CD146030E99": "scene_right_0", "BFS_23595718": "wrist_left_plus"}
ARMS = ("right", "left")


class Tripwire:
    """Raises when unpickled: stands for the pickled ``skill_type`` nobody may load."""

    def __reduce__(self) -> tuple:
        return (_tripped, ())


def _tripped() -> None:
    raise AssertionError("skill_type was unpickled: actions.npz must be read with allow_pickle=False")


def _rot6d(angle: np.ndarray) -> np.ndarray:
    """First two rows of a rotation about z by ``angle`` [T] -> [T, 6]."""
    c, s, z = np.cos(angle), np.sin(angle), np.zeros_like(angle)
    return np.stack([c, -s, z, s, c, z], axis=1)


def robot_traces(length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``robot__{actual,desired}__…`` arrays for both arms (smooth paths + small noise)."""
    t = np.linspace(0.0, 1.0, length)[:, None]
    out: dict[str, np.ndarray] = {}
    for kind in ("actual", "desired"):
        for arm in ARMS:
            start, goal = rng.normal(scale=0.2, size=(2, 3))
            base = f"robot__{kind}__"
            out[f"{base}poses__{arm}::panda__xyz"] = start + (goal - start) * t
            out[f"{base}poses__{arm}::panda__rot_6d"] = _rot6d(0.5 * t[:, 0] + rng.normal(scale=0.01))
            out[f"{base}grippers__{arm}::panda_hand"] = 0.04 + 0.04 * np.cos(3 * t)
            for name, dim in (
                ("joint_position", 7),
                ("joint_velocity", 7),
                ("joint_torque", 7),
                ("joint_torque_external", 7),
                ("wrench", 6),
                ("external_wrench", 6),
            ):
                out[f"{base}{name}__{arm}::panda"] = rng.normal(size=(length, dim))
    return out


def write_spartan_episode(
    root: str | Path,
    *,
    skill: str = "PutMugOnSaucer",
    station: str = "cabot",
    index: int = 0,
    length: int = 12,
    cameras: dict[str, str] | None = None,
    size: tuple[int, int] = (24, 32),
    success: bool = True,
    seed: int = 0,
    date: str = "2025-01-01T00-00-00",
) -> Path:
    """Write one spartan episode under ``root/tasks/...``; return its ``processed`` folder."""
    cameras = dict(cameras or DEFAULT_CAMERAS)
    rng = np.random.default_rng(seed)
    ep = Path(
        root,
        "tasks",
        skill,
        station,
        "sim",
        "bc",
        "teleop",
        date,
        "diffusion_spartan",
        f"episode_{index}",
        "processed",
    )
    ep.mkdir(parents=True, exist_ok=True)
    robot = robot_traces(length, rng)
    nxt = {k: np.concatenate([v[1:], v[-1:]]) for k, v in robot.items() if k.startswith("robot__desired__")}
    parts = []
    for arm in ARMS:
        parts += [
            nxt[f"robot__desired__poses__{arm}::panda__xyz"],
            nxt[f"robot__desired__poses__{arm}::panda__rot_6d"],
        ]
    parts += [nxt[f"robot__desired__grippers__{arm}::panda_hand"] for arm in ARMS]
    actions = np.concatenate(parts, axis=1)
    skill_type = np.empty(1, dtype=object)
    skill_type[0] = Tripwire()
    np.savez(ep / "actions.npz", actions=actions, skill_type=skill_type)
    h, w = size
    obs: dict[str, np.ndarray] = dict(robot)
    intrinsics, extrinsics = {}, {}
    for c, cam_id in enumerate(cameras):
        img = rng.integers(0, 255, size=(length, h, w, 3), dtype=np.uint8)
        img[..., 0] = (seed * 10 + c) % 256
        img[..., 1] = np.arange(length, dtype=np.uint8)[:, None, None]
        obs[cam_id] = img
        obs[f"{cam_id}_depth"] = rng.integers(0, 2000, size=(length, h, w), dtype=np.uint16)
        obs[f"{cam_id}_label"] = rng.integers(0, 8, size=(length, h, w), dtype=np.uint8)
        intrinsics[cam_id] = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)
        pose = np.tile(np.eye(4), (length, 1, 1))
        pose[:, :3, 3] = rng.normal(size=3)
        extrinsics[cam_id] = pose
    np.savez(ep / "observations.npz", **obs)
    np.savez(ep / "intrinsics.npz", **intrinsics)
    np.savez(ep / "extrinsics.npz", **extrinsics)
    np.savez(ep / "summary.npz", episode_success=np.array([[success]]))
    (ep / "metadata.yaml").write_text(yaml.safe_dump({"camera_id_to_semantic_name": cameras}))
    for cam_id in cameras:
        (ep / f"images_{cam_id}").mkdir(exist_ok=True)
        (ep / f"images_{cam_id}" / "camera_info.yaml").write_text(
            yaml.safe_dump({"width": w, "height": h, "k": intrinsics[cam_id].reshape(-1).tolist()})
        )
    (ep / "pose_data.yaml").write_text(yaml.safe_dump({c: extrinsics[c][0].tolist() for c in cameras}))
    (ep / "resolved_scenario.yaml").write_text(yaml.safe_dump({"skill": skill, "station": station}))
    (ep / "manifest.json").write_text(json.dumps({"episode": index, "length": length}))
    return ep


def write_spartan_tree(root: str | Path, episodes: int = 2, length: int = 12, **kw: object) -> list[Path]:
    """``episodes`` spartan episodes of one skill under ``root`` (alternating success)."""
    return [
        write_spartan_episode(root, index=i, length=length, seed=i, success=i % 2 == 0, **kw)  # type: ignore[arg-type]
        for i in range(episodes)
    ]
