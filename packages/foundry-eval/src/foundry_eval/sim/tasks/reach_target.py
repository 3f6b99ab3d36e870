"""``reach_target``: lower the gripper onto the target disk the instruction names (blue or yellow).

Two flat disks lie on the table; each episode picks one as the goal and says which by colour. Success:
the TCP is within 3 cm (horizontally) of the goal's centre and less than 5 cm above the table. The
other disk is a distractor, so a policy that ignores the instruction succeeds about half the time at
best — the task separates language-conditioned policies from vision-only ones. Episodes are short
(the expert needs ~2–3 s), which makes it the cheapest task to learn from few demonstrations.
Test: ``pytest packages/foundry-eval/tests/test_eval_sim_tasks.py -k reach_target``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from foundry_eval.sim.env import TabletopEnv, sample_separated
from foundry_eval.sim.experts import OPEN, Waypoint, WaypointExpert
from foundry_eval.sim.scene import ObjectSpec, table_pose

RADIUS = 0.035
SUCCESS_DIST = 0.03
SUCCESS_HEIGHT = 0.05
COLORS = {"blue": (0.15, 0.3, 0.85, 1.0), "yellow": (0.95, 0.8, 0.1, 1.0)}


class ReachTarget(TabletopEnv):
    """Visually guided, language-conditioned reaching."""

    task_name: ClassVar[str] = "ReachTarget"
    instruction_templates: ClassVar[tuple[str, ...]] = (
        "touch the {color} target",
        "move the gripper down onto the {color} circle",
        "reach for the {color} disk",
        "put the gripper on the {color} target",
    )

    @dataclass(kw_only=True)
    class Config(TabletopEnv.Config):
        time_limit_s: float = 8.0

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__(cfg)
        self.goal = next(iter(COLORS))

    def object_specs(self) -> list[ObjectSpec]:
        return [ObjectSpec(name, "marker", (RADIUS,), 0.0, rgba) for name, rgba in COLORS.items()]

    def sample_objects(self, rng: np.random.Generator) -> dict[str, Any]:
        points = sample_separated(rng, len(COLORS), -0.16, 0.16, min_dist=0.12)
        self.goal = list(COLORS)[int(rng.integers(len(COLORS)))]
        return {name: table_pose(*xy, 0.001, 0.0) for name, xy in zip(COLORS, points)}

    def sample_instruction(self, rng: np.random.Generator) -> str:
        template = self.instruction_templates[int(rng.integers(len(self.instruction_templates)))]
        return template.format(color=self.goal)

    def is_success(self) -> bool:
        tcp = self.scene.gripper_state().xyz
        return bool(np.linalg.norm(tcp[:2] - self.xy(self.goal)) < SUCCESS_DIST and tcp[2] < SUCCESS_HEIGHT)

    def expert(self) -> WaypointExpert:
        return WaypointExpert(self._plan, self.control_dt)

    def _plan(self) -> Iterator[Waypoint]:
        goal = self.xy(self.goal)
        yaw = self.scene.gripper_state().yaw
        yield Waypoint(np.array([*goal, 0.10]), yaw, OPEN, speed=0.3)
        yield Waypoint(np.array([*goal, 0.03]), yaw, OPEN, speed=0.2, tol=0.006)
