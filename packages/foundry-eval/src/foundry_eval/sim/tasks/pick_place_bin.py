"""``pick_place_bin``: pick a red block off the table and drop it into a blue bin.

Success: the block's centre lies inside the bin's inner volume (in the bin's frame). Test:
``pytest packages/foundry-eval/tests/test_eval_sim_tasks.py -k pick_place_bin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from foundry_eval.sim.env import TabletopEnv, sample_separated
from foundry_eval.sim.experts import WaypointExpert, pick_and_place
from foundry_eval.sim.scene import ObjectSpec, table_pose

BLOCK = 0.04
BIN = (0.16, 0.16, 0.06, 0.01)  # outer length, width, height, wall


class PickPlaceBin(TabletopEnv):
    """Pick-and-place into a container."""

    task_name: ClassVar[str] = "PickPlaceBin"
    instruction_templates: ClassVar[tuple[str, ...]] = (
        "put the red block in the blue bin",
        "pick up the red block and place it into the bin",
        "move the red cube into the blue container",
        "drop the red block inside the bin",
    )

    @dataclass(kw_only=True)
    class Config(TabletopEnv.Config):
        time_limit_s: float = 15.0

    def object_specs(self) -> list[ObjectSpec]:
        return [
            ObjectSpec("block", "box", (BLOCK,) * 3, 0.1, (0.85, 0.1, 0.1, 1.0)),
            ObjectSpec("bin", "bin", BIN, 0.8, (0.15, 0.3, 0.85, 1.0)),
        ]

    def sample_objects(self, rng: np.random.Generator) -> dict[str, Any]:
        block, bin_ = sample_separated(rng, 2, -0.18, 0.18, min_dist=0.2)
        return {
            "block": table_pose(*block, BLOCK / 2 + 0.0005, rng.uniform(-np.pi, np.pi)),
            "bin": table_pose(*bin_, BIN[2] / 2 + 0.0005, rng.uniform(-np.pi, np.pi)),
        }

    def is_success(self) -> bool:
        X_WB = self.scene.pose("bin")
        p = X_WB.inverse().multiply(self.scene.pose("block").translation())
        inner = BIN[0] / 2 - BIN[3]
        return bool(abs(p[0]) < inner and abs(p[1]) < inner and -BIN[2] / 2 < p[2] < BIN[2] / 2)

    def episode_metrics(self) -> dict[str, float]:
        """``goal_distance``: the block's centre to the bin's centre, horizontally (m); success is
        the bin's inner volume (a square), so the task declares no ``success_distance``."""
        return {"goal_distance": float(np.linalg.norm(self.xy("block") - self.xy("bin")))}

    def expert(self) -> WaypointExpert:
        plan = lambda: pick_and_place(  # noqa: E731
            self,
            "block",
            grasp_z=BLOCK / 2,
            place_xy=lambda: self.xy("bin"),
            place_z=0.09,
            symmetry=np.pi / 2,
        )
        return WaypointExpert(plan, self.control_dt)
