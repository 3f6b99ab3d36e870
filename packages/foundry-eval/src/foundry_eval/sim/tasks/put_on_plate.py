"""``put_on_plate``: pick up a yellow can (an upright cylinder) and set it down on a white plate.

Success: the can stands on the plate (centre within 5 cm of the plate's, bottom within 1 cm above
the plate's top), nearly still, and the fingers are open. Test:
``pytest packages/foundry-eval/tests/test_eval_sim_tasks.py -k put_on_plate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from foundry_eval.sim.env import TabletopEnv, sample_separated
from foundry_eval.sim.experts import WaypointExpert, pick_and_place
from foundry_eval.sim.scene import ObjectSpec, table_pose

CAN = (0.02, 0.06)  # radius, height
PLATE = (0.07, 0.012)  # radius, thickness


class PutOnPlate(TabletopEnv):
    """Place an upright, round object on a flat receptacle without tipping it."""

    task_name: ClassVar[str] = "PutOnPlate"
    instruction_templates: ClassVar[tuple[str, ...]] = (
        "put the yellow can on the plate",
        "place the can onto the white plate",
        "pick up the yellow can and set it down on the plate",
        "move the can to the plate",
    )

    @dataclass(kw_only=True)
    class Config(TabletopEnv.Config):
        time_limit_s: float = 15.0

    def object_specs(self) -> list[ObjectSpec]:
        return [
            ObjectSpec("can", "cylinder", CAN, 0.08, (0.95, 0.8, 0.1, 1.0)),
            ObjectSpec("plate", "plate", PLATE, 0.4, (0.95, 0.95, 0.95, 1.0)),
        ]

    def sample_objects(self, rng: np.random.Generator) -> dict[str, Any]:
        can, plate = sample_separated(rng, 2, -0.17, 0.17, min_dist=0.16)
        return {
            "can": table_pose(*can, CAN[1] / 2 + 0.0005, rng.uniform(-np.pi, np.pi)),
            "plate": table_pose(*plate, PLATE[1] / 2 + 0.0005, 0.0),
        }

    def is_success(self) -> bool:
        dxy = np.linalg.norm(self.xy("can") - self.xy("plate"))
        gap = (self.z("can") - CAN[1] / 2) - (self.z("plate") + PLATE[1] / 2)
        return bool(
            dxy < 0.05
            and -0.002 < gap < 0.01
            and self.scene.speed("can") < 0.05
            and self.released(2 * CAN[0])
        )

    def expert(self) -> WaypointExpert:
        plate_top = PLATE[1] + 0.0005
        plan = lambda: pick_and_place(  # noqa: E731
            self,
            "can",
            grasp_z=CAN[1] / 2,
            place_xy=lambda: self.xy("plate"),
            place_z=plate_top + 0.006 + CAN[1] / 2,
            symmetry=0.0,
        )
        return WaypointExpert(plan, self.control_dt)
