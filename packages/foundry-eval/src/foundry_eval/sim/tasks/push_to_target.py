"""``push_to_target``: push a red block (without grasping it) onto a green target disk.

Success: the block's centre is within 3 cm of the target's centre and the block is on the table.
The expert pushes with slightly opened fingers (two contact points keep the block from spinning)
and re-aims every step toward the target, backing off and re-approaching if the block slid sideways.
Test: ``pytest packages/foundry-eval/tests/test_eval_sim_tasks.py -k push_to_target``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from foundry_eval.sim.env import TabletopEnv, sample_separated
from foundry_eval.sim.experts import Waypoint, WaypointExpert, grasp_yaw
from foundry_eval.sim.scene import FINGER_SIZE, ObjectSpec, table_pose

BLOCK = 0.04
TARGET_RADIUS = 0.035
SUCCESS_DIST = 0.03
_PUSH_OPENING = 0.02
_CONTACT = BLOCK / 2 + FINGER_SIZE[0] / 2  # TCP to block centre when touching its back face


class PushToTarget(TabletopEnv):
    """Non-prehensile manipulation: planar pushing."""

    task_name: ClassVar[str] = "PushToTarget"
    success_distance: ClassVar[float] = SUCCESS_DIST
    instruction_templates: ClassVar[tuple[str, ...]] = (
        "push the red block onto the green target",
        "slide the red block to the green circle",
        "push the red cube so it ends up on the target",
        "move the red block onto the green disk by pushing it",
    )

    @dataclass(kw_only=True)
    class Config(TabletopEnv.Config):
        time_limit_s: float = 15.0

    def object_specs(self) -> list[ObjectSpec]:
        return [
            ObjectSpec("block", "box", (BLOCK,) * 3, 0.1, (0.85, 0.1, 0.1, 1.0)),
            ObjectSpec("target", "marker", (TARGET_RADIUS,), 0.0, (0.1, 0.75, 0.2, 1.0)),
        ]

    def sample_objects(self, rng: np.random.Generator) -> dict[str, Any]:
        while True:
            block, target = sample_separated(rng, 2, -0.16, 0.16, min_dist=0.10)
            if np.linalg.norm(block - target) <= 0.22:
                break
        return {
            "block": table_pose(*block, BLOCK / 2 + 0.0005, rng.uniform(-np.pi, np.pi)),
            "target": table_pose(*target, 0.001, 0.0),
        }

    def is_success(self) -> bool:
        return bool(
            np.linalg.norm(self.xy("block") - self.xy("target")) < SUCCESS_DIST and self.z("block") < BLOCK
        )

    def episode_metrics(self) -> dict[str, float]:
        """``goal_distance``: the block's centre to the target's centre, horizontally (m)."""
        return {"goal_distance": float(np.linalg.norm(self.xy("block") - self.xy("target")))}

    def expert(self) -> WaypointExpert:
        return WaypointExpert(self._plan, self.control_dt)

    def _plan(self) -> Iterator[Waypoint]:
        push_z = BLOCK / 2
        high = 0.10
        while True:
            b, t = self.xy("block"), self.xy("target")
            d = t - b
            u = d / max(np.linalg.norm(d), 1e-9)
            yaw = grasp_yaw(float(np.arctan2(u[1], u[0])), self.scene.gripper_state().yaw, np.pi)
            start = b - u * (_CONTACT + 0.03)
            yield Waypoint(np.array([*start, high]), yaw, _PUSH_OPENING)
            yield Waypoint(np.array([*start, push_z]), yaw, _PUSH_OPENING, speed=0.2, tol=0.006)
            while True:  # push in short re-aimed strokes until done or misaligned
                b, t = self.xy("block"), self.xy("target")
                d = t - b
                dist = float(np.linalg.norm(d))
                tcp = self.scene.gripper_state().xyz[:2]
                if dist < 0.008:
                    back = tcp - u * 0.03
                    yield Waypoint(np.array([*back, push_z]), yaw, _PUSH_OPENING, tol=None)
                    yield Waypoint(np.array([*back, high]), yaw, _PUSH_OPENING, tol=None)
                    return
                u_new = d / dist
                n = np.array([-u_new[1], u_new[0]])
                rel = tcp - b
                if abs(rel @ n) > 0.012 or rel @ u_new > -_CONTACT + 0.01:
                    # Block slid sideways or got behind us: lift and re-approach from behind it.
                    here = self.scene.gripper_state().xyz
                    yield Waypoint(np.array([here[0], here[1], high]), yaw, _PUSH_OPENING, tol=None)
                    break
                u = u_new
                goal = b - u * _CONTACT + u * min(0.02, dist)
                yield Waypoint(np.array([*goal, push_z]), yaw, _PUSH_OPENING, speed=0.15, tol=None)
