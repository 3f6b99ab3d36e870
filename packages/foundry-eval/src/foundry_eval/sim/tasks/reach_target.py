"""``reach_target``: lower the gripper onto a target disk (the blue one, or the one the instruction names).

Success: the TCP is within 3 cm (horizontally) of the goal's centre and less than 5 cm above the
table. By default one blue disk lies on the table: the task needs only visual localization, and its
episodes are short (~1 s for the expert), so it is the one a CPU-trained policy learns from a few
dozen demonstrations. With ``distractor: true`` a yellow disk is added and each episode names its
goal by colour, so a policy that ignores the instruction reaches at most about half the goals — a
test of language conditioning.
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
    success_distance: ClassVar[float] = SUCCESS_DIST
    instruction_templates: ClassVar[tuple[str, ...]] = (
        "touch the {color} target",
        "move the gripper down onto the {color} circle",
        "reach for the {color} disk",
        "put the gripper on the {color} target",
    )

    @dataclass(kw_only=True)
    class Config(TabletopEnv.Config):
        time_limit_s: float = 8.0
        #: Add a second disk and name the goal's colour in the instruction.
        distractor: bool = False

    def __init__(self, cfg: Config | None = None) -> None:
        self.colors = list(COLORS) if (cfg is not None and cfg.distractor) else list(COLORS)[:1]
        super().__init__(cfg)
        self.goal = self.colors[0]

    def object_specs(self) -> list[ObjectSpec]:
        return [ObjectSpec(name, "marker", (RADIUS,), 0.0, COLORS[name]) for name in self.colors]

    def sample_objects(self, rng: np.random.Generator) -> dict[str, Any]:
        points = sample_separated(rng, len(self.colors), -0.16, 0.16, min_dist=0.12)
        self.goal = self.colors[int(rng.integers(len(self.colors)))]
        return {name: table_pose(*xy, 0.001, 0.0) for name, xy in zip(self.colors, points)}

    def sample_instruction(self, rng: np.random.Generator) -> str:
        template = self.instruction_templates[int(rng.integers(len(self.instruction_templates)))]
        return template.format(color=self.goal)

    def is_success(self) -> bool:
        tcp = self.scene.gripper_state().xyz
        return bool(np.linalg.norm(tcp[:2] - self.xy(self.goal)) < SUCCESS_DIST and tcp[2] < SUCCESS_HEIGHT)

    def episode_metrics(self) -> dict[str, float]:
        """Where the gripper ended (m): ``goal_distance`` (horizontal, TCP to the named disk's centre),
        ``tcp_height`` and, with a distractor, ``distractor_distance`` (TCP to the other disk): an
        episode nearer the named disk than the other chose the right one even when it missed by more
        than ``success_distance``."""
        tcp = self.scene.gripper_state().xyz
        out = {
            "goal_distance": float(np.linalg.norm(tcp[:2] - self.xy(self.goal))),
            "tcp_height": float(tcp[2]),
        }
        for other in (c for c in self.colors if c != self.goal):
            out["distractor_distance"] = float(np.linalg.norm(tcp[:2] - self.xy(other)))
        return out

    def expert(self) -> WaypointExpert:
        return WaypointExpert(self._plan, self.control_dt)

    def _plan(self) -> Iterator[Waypoint]:
        goal = self.xy(self.goal)
        yaw = self.scene.gripper_state().yaw
        yield Waypoint(np.array([*goal, 0.10]), yaw, OPEN, speed=0.3)
        yield Waypoint(np.array([*goal, 0.03]), yaw, OPEN, speed=0.2, tol=0.006)
