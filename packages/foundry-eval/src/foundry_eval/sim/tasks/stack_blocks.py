"""``stack_blocks``: stack the red block on top of the blue block.

Success: red rests on blue (centres within 2 cm horizontally, height difference one block within
5 mm), the red block is nearly still and the fingers are open (it is not being held up). Test:
``pytest packages/foundry-eval/tests/test_eval_sim_tasks.py -k stack_blocks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydrake.math import RollPitchYaw

from foundry_eval.sim.env import TabletopEnv, sample_separated
from foundry_eval.sim.experts import WaypointExpert, grasp_yaw, pick_and_place
from foundry_eval.sim.scene import ObjectSpec, table_pose

BLOCK = 0.04


class StackBlocks(TabletopEnv):
    """Precise placement on a small, movable support."""

    task_name: ClassVar[str] = "StackBlocks"
    instruction_templates: ClassVar[tuple[str, ...]] = (
        "stack the red block on the blue block",
        "put the red cube on top of the blue cube",
        "place the red block onto the blue one",
        "pick up the red block and stack it on the blue block",
    )

    @dataclass(kw_only=True)
    class Config(TabletopEnv.Config):
        time_limit_s: float = 15.0

    def object_specs(self) -> list[ObjectSpec]:
        return [
            ObjectSpec("red", "box", (BLOCK,) * 3, 0.1, (0.85, 0.1, 0.1, 1.0)),
            ObjectSpec("blue", "box", (BLOCK,) * 3, 0.1, (0.15, 0.3, 0.85, 1.0)),
        ]

    def sample_objects(self, rng: np.random.Generator) -> dict[str, Any]:
        red, blue = sample_separated(rng, 2, -0.18, 0.18, min_dist=0.12)
        z = BLOCK / 2 + 0.0005
        return {
            "red": table_pose(*red, z, rng.uniform(-np.pi, np.pi)),
            "blue": table_pose(*blue, z, rng.uniform(-np.pi, np.pi)),
        }

    def is_success(self) -> bool:
        dxy = np.linalg.norm(self.xy("red") - self.xy("blue"))
        dz = self.z("red") - self.z("blue")
        return bool(
            dxy < 0.02 and abs(dz - BLOCK) < 0.005 and self.scene.speed("red") < 0.05 and self.released(BLOCK)
        )

    def expert(self) -> WaypointExpert:
        plan = lambda: pick_and_place(  # noqa: E731
            self,
            "red",
            grasp_z=BLOCK / 2,
            place_xy=lambda: self.xy("blue"),
            place_z=BLOCK * 1.5 + 0.006,
            symmetry=np.pi / 2,
            place_yaw=self._aligned_with_blue,
        )
        return WaypointExpert(plan, self.control_dt)

    def _aligned_with_blue(self, yaw: float) -> float:
        """Carry yaw that lines the red block's faces up with the blue block's (a neat stack)."""
        blue_yaw = RollPitchYaw(self.scene.pose("blue").rotation()).yaw_angle()
        return grasp_yaw(blue_yaw, yaw, np.pi / 2)
