"""Base class of the Drake tabletop tasks: seeded reset, 0.1 s control steps, observations, limits.

A task subclass declares its objects, samples their initial poses, phrases its instruction, defines
its success predicate and its scripted expert; everything else (action checking, the gripper
command, cameras, proprio, time limit) lives here so all tasks speak the ``interfaces.Task`` contract.
The action is an absolute TCP pose (xyz + rot6d) and a finger opening; the gripper is top-down, so
the commanded rotation is projected onto its yaw (roll/pitch are ignored). Test:
``pytest packages/foundry-eval/tests/test_eval_sim_tasks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from foundry_core.errors import ConfigError
from foundry_eval.sim.cameras import CAMERA_NAMES
from foundry_eval.sim.pose import pose_to_vec10, top_down_rotation, vec10_to_pose, wrap_angle, yaw_of
from foundry_eval.sim.scene import MAX_OPENING, ObjectSpec, TabletopScene

MAX_SPEED = 0.5  #: m/s, the fastest the gripper target moves toward a commanded position
MAX_YAW_RATE = 3.0  #: rad/s
_SUBSTEPS = 5  #: target ramp steps per control step


class TabletopEnv:
    """One tabletop task (see the module docstring); subclasses fill in the task-specific hooks."""

    task_name: ClassVar[str] = ""  #: PascalCase name written to results.json
    #: Horizontal goal distance (m) a success needs, for tasks whose ``episode_metrics()`` report a
    #: ``goal_distance``; reports print it next to the measured distances. None: no such threshold.
    success_distance: ClassVar[float | None] = None
    instruction_templates: ClassVar[tuple[str, ...]] = ()
    control_dt: float = 0.1
    action_dim: int = 10
    proprio_dim: int = 10

    @dataclass(kw_only=True)
    class Config:
        """Settings shared by every tabletop task.

        Attributes:
            image_size: square image side in pixels.
            cameras: subset of ``scene`` and ``wrist``; empty for fast image-free runs.
            time_limit_s: the episode fails when not successful after this much simulated time.
            time_step: physics step of the discrete plant (seconds).
        """

        image_size: int = 64
        cameras: list[str] = field(default_factory=lambda: ["scene", "wrist"])
        time_limit_s: float = 15.0
        time_step: float = 4e-3

    def __init__(self, cfg: Config | None = None) -> None:
        cfg = cfg if cfg is not None else self.Config()
        where = f"task {self.task_name}"
        if cfg.time_limit_s <= 0:
            raise ConfigError(f"{where}: time_limit_s must be > 0, got {cfg.time_limit_s}")
        if not 0 < cfg.time_step <= 0.01:
            raise ConfigError(f"{where}: time_step must be in (0, 0.01], got {cfg.time_step}")
        unknown = [c for c in cfg.cameras if c not in CAMERA_NAMES]
        if unknown or len(set(cfg.cameras)) != len(cfg.cameras):
            raise ConfigError(
                f"{where}: cameras {cfg.cameras} must be distinct names from {list(CAMERA_NAMES)}"
            )
        if cfg.image_size < 8:
            raise ConfigError(f"{where}: image_size must be >= 8, got {cfg.image_size}")
        self.cfg = cfg
        self.time_limit_s = float(cfg.time_limit_s)
        self.scene = TabletopScene(
            self.object_specs(), cameras=list(cfg.cameras), image_size=cfg.image_size, time_step=cfg.time_step
        )
        self.camera_names = list(cfg.cameras)
        self.instruction = ""
        self.seed: int | None = None
        self._yaw_cmd = 0.0
        self._xyz_cmd = np.zeros(3)
        self._steps = 0

    @classmethod
    def from_config(cls, cfg: Config, ctx: Any = None) -> TabletopEnv:
        return cls(cfg)

    # ------------------------------------------------------------------ task hooks
    def object_specs(self) -> list[ObjectSpec]:
        """The task's objects (built once; their poses change at every reset)."""
        raise AssertionError(f"{type(self).__name__} must define object_specs()")

    def sample_objects(self, rng: np.random.Generator) -> dict[str, Any]:
        """Initial object poses {name: RigidTransform} for one seed."""
        raise AssertionError(f"{type(self).__name__} must define sample_objects()")

    def sample_instruction(self, rng: np.random.Generator) -> str:
        """The episode's instruction (after ``sample_objects``): one of the templates by default."""
        return str(self.instruction_templates[int(rng.integers(len(self.instruction_templates)))])

    def is_success(self) -> bool:
        raise AssertionError(f"{type(self).__name__} must define is_success()")

    def expert(self) -> Any:
        """A scripted expert for the current episode: ``act(obs) -> float32 [10]``."""
        raise AssertionError(f"{type(self).__name__} must define expert()")

    # Optional hook (not defined here, so tasks without it write results exactly as before):
    # ``episode_metrics() -> dict[str, float]``, end-of-episode measurements that say WHY an episode
    # failed (``goal_distance``: metres from the object or gripper to its goal, horizontally). The
    # rollout runner records them as the episode's ``metrics`` in results.json (see interfaces.Task).

    # ------------------------------------------------------------------ Task API
    def reset(self, seed: int) -> dict[str, Any]:
        """Sample the initial state and the instruction from ``seed``; return the first observation."""
        if self.scene is None:
            raise RuntimeError(f"{self.task_name}: reset() after close()")
        rng = np.random.default_rng(int(seed))
        self.seed = int(seed)
        xyz = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(0.2, 0.25)])
        yaw = float(rng.uniform(-0.4, 0.4))
        poses = self.sample_objects(rng)
        self.instruction = self.sample_instruction(rng)
        self._yaw_cmd = yaw
        self._xyz_cmd = xyz
        self._steps = 0
        self.scene.reset(xyz, yaw, MAX_OPENING, poses)
        return self.observation()

    def step(self, action: Any) -> dict[str, Any]:
        """Command an absolute TCP pose + opening, simulate ``control_dt`` seconds, observe."""
        if self.seed is None:
            raise RuntimeError(f"{self.task_name}: step() called before reset()")
        xyz, R, opening = vec10_to_pose(action)
        # Like a differential-IK controller, the gripper target moves toward the commanded pose at
        # bounded speed (ramped in sub-steps): a far jump cannot fling objects and blow up the physics.
        dt = self.control_dt
        delta = self.scene.clip_xyz(xyz) - self._xyz_cmd
        dist = float(np.linalg.norm(delta))
        if dist > MAX_SPEED * dt:
            delta *= MAX_SPEED * dt / dist
        # The gripper is top-down: keep the yaw of R, and turn the short way (yaw and yaw + 2 pi agree).
        dyaw = float(np.clip(wrap_angle(yaw_of(R) - self._yaw_cmd), -MAX_YAW_RATE * dt, MAX_YAW_RATE * dt))
        start_xyz, start_yaw = self._xyz_cmd, self._yaw_cmd
        for i in range(1, _SUBSTEPS + 1):
            frac = i / _SUBSTEPS
            self.scene.command(
                start_xyz + frac * delta, start_yaw + frac * dyaw, opening, delta / dt, dyaw / dt
            )
            self.scene.advance_to((self._steps + frac) * dt)
        self._steps += 1
        self._xyz_cmd = start_xyz + delta
        self._yaw_cmd = start_yaw + dyaw
        return self.observation()

    def commanded_pose(self) -> tuple[np.ndarray, float]:
        """(xyz, yaw) the gripper is being sent to now (after the speed limit); DAgger relabelling
        lets the scripted expert continue from here after a policy step."""
        return self._xyz_cmd.copy(), float(self._yaw_cmd)

    def done(self) -> bool:
        """True once the task succeeded or the time limit is reached."""
        return self.is_success() or self.scene.time >= self.time_limit_s - 1e-9

    @property
    def time(self) -> float:
        return self.scene.time

    def proprio(self) -> np.ndarray:
        g = self.scene.gripper_state()
        T = np.eye(4)
        T[:3, :3] = top_down_rotation(g.yaw)
        T[:3, 3] = g.xyz
        return pose_to_vec10(T, g.opening)

    def observation(self) -> dict[str, Any]:
        return {"images": self.scene.render(), "proprio": self.proprio(), "instruction": self.instruction}

    def close(self) -> None:
        """Release the simulator (the env cannot be used afterwards)."""
        self.scene = None  # type: ignore[assignment]
        self.seed = None

    # ------------------------------------------------------------------ helpers for tasks
    def xy(self, name: str) -> np.ndarray:
        return self.scene.pose(name).translation()[:2].copy()

    def z(self, name: str) -> float:
        return float(self.scene.pose(name).translation()[2])

    def released(self, width: float) -> bool:
        """The fingers are open wider than ``width`` + 5 mm (the object is let go)."""
        return self.scene.gripper_state().opening > width + 0.005


def sample_separated(
    rng: np.random.Generator, n: int, low: float, high: float, min_dist: float, tries: int = 1000
) -> list[np.ndarray]:
    """``n`` xy points uniform in [low, high]^2 that are pairwise at least ``min_dist`` apart."""
    for _ in range(tries):
        pts = [rng.uniform(low, high, size=2) for _ in range(n)]
        if all(np.linalg.norm(pts[i] - pts[j]) >= min_dist for i in range(n) for j in range(i)):
            return pts
    raise ValueError(f"cannot place {n} points {min_dist} m apart in [{low}, {high}]^2")
