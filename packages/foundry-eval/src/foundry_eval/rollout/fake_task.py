"""A fake simulator and fake policies for fast CPU tests of the rollout runner and the policy server.

``PointReach`` (env name ``point_reach``) implements ``interfaces.Task`` like the Drake tasks: a
gripper point moves in the table plane toward the commanded absolute xyz at a bounded speed; the
episode succeeds when it is within 2 cm of a seeded target. Observations, actions and the scripted
``expert()`` use the real 10-D format (xyz, rot6d, gripper), and ``crash_seeds`` makes ``step`` raise
like a simulator failure. The fake policies return NaN, a wrong shape, or raise. They live in the
package (not in a test file) so spawned worker processes can import them.
Tested by ``tests/test_eval_rollout.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

IDENTITY_ROT6D = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
HEIGHT = 0.1
OPENING = 0.04


class SimulatedFailure(RuntimeError):
    """What ``PointReach.step`` raises for a seed in ``crash_seeds`` (stands in for Drake's SimFailure)."""


def _vec10(xy: np.ndarray, opening: float = OPENING) -> np.ndarray:
    return np.concatenate([xy, [HEIGHT], IDENTITY_ROT6D, [opening]]).astype(np.float32)


class PointReach:
    """2-D point reaching with images, proprio and an instruction (see module docstring)."""

    task_name: ClassVar[str] = "PointReach"
    control_dt: float = 0.1
    action_dim: int = 10
    proprio_dim: int = 10
    max_speed: float = 0.25  # m/s
    workspace: float = 0.2  # targets and starts in [-workspace, workspace]^2

    @dataclass(kw_only=True)
    class Config:
        """Attributes:
        image_size: square image side in pixels.
        cameras: camera names; each renders the same top view.
        time_limit_s: simulated seconds before the episode times out.
        crash_seeds: seeds whose episodes raise ``SimulatedFailure`` at the third step.
        success_dist: success radius around the target (m).
        """

        image_size: int = 16
        cameras: list[str] = field(default_factory=lambda: ["scene"])
        time_limit_s: float = 3.0
        crash_seeds: list[int] = field(default_factory=list)
        success_dist: float = 0.02

    def __init__(self, cfg: Config | None = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
        self.time_limit_s = float(self.cfg.time_limit_s)
        self.camera_names = list(self.cfg.cameras)
        self.instruction = ""
        self.seed: int | None = None
        self.time = 0.0
        self._pos = np.zeros(2)
        self._target = np.zeros(2)
        self._steps = 0

    @classmethod
    def from_config(cls, cfg: Config, ctx: Any = None) -> PointReach:
        return cls(cfg)

    def reset(self, seed: int) -> dict[str, Any]:
        rng = np.random.default_rng(int(seed))
        self.seed = int(seed)
        self._pos = rng.uniform(-self.workspace, self.workspace, size=2)
        self._target = rng.uniform(-self.workspace, self.workspace, size=2)
        self.instruction = "move the gripper to the red dot"
        self.time = 0.0
        self._steps = 0
        return self.observation()

    def step(self, action: Any) -> dict[str, Any]:
        if self.seed is None:
            raise RuntimeError("PointReach: step() called before reset()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(
                f"PointReach: action must be finite with shape ({self.action_dim},), got {action}"
            )
        self._steps += 1
        if self.seed in self.cfg.crash_seeds and self._steps == 3:
            raise SimulatedFailure(f"simulated solver failure (seed {self.seed})")
        delta = action[:2] - self._pos
        dist = float(np.linalg.norm(delta))
        limit = self.max_speed * self.control_dt
        self._pos = self._pos + (delta if dist <= limit else delta * (limit / dist))
        self.time = round(self.time + self.control_dt, 9)
        return self.observation()

    def is_success(self) -> bool:
        return bool(np.linalg.norm(self._pos - self._target) < self.cfg.success_dist)

    def observation(self) -> dict[str, Any]:
        image = self._render()
        return {
            "images": {name: image for name in self.camera_names},
            "proprio": _vec10(self._pos),
            "instruction": self.instruction,
        }

    def _render(self) -> np.ndarray:
        size = self.cfg.image_size
        image = np.full((size, size, 3), 255, dtype=np.uint8)
        for xy, color in ((self._target, (220, 30, 30)), (self._pos, (30, 30, 220))):
            px = np.clip(((xy / self.workspace + 1) / 2 * (size - 1)).round().astype(int), 0, size - 1)
            image[max(px[1] - 1, 0) : px[1] + 2, max(px[0] - 1, 0) : px[0] + 2] = color
        return image

    def expert(self) -> ScriptedReacher:
        """The privileged scripted expert of the current episode: ``act(obs) -> float32 [10]``."""
        return ScriptedReacher(self._target.copy())

    def close(self) -> None:
        self.seed = None


class ScriptedReacher:
    """Commands the target position directly (the env limits the speed)."""

    def __init__(self, target: np.ndarray) -> None:
        self.target = target

    def act(self, observation: Any) -> np.ndarray:
        return _vec10(self.target)


# ----------------------------------------------------------------------------- fake policies


class ConstantPolicy:
    """Returns a chunk that holds the current proprio pose, optionally moved by a fixed offset."""

    def __init__(self, chunk_size: int = 8, offset: tuple[float, float] = (0.0, 0.0)) -> None:
        self.chunk_size = chunk_size
        self.offset = np.array([*offset, 0.0])
        self.resets = 0
        self.calls = 0

    def reset(self) -> None:
        self.resets += 1

    def act(self, observation: Any) -> np.ndarray:
        self.calls += 1
        row = np.asarray(observation["proprio"], dtype=np.float32).copy()
        row[:3] += self.offset
        return np.tile(row, (self.chunk_size, 1))

    def metadata(self) -> dict[str, Any]:
        return {"name": "constant", "cameras": ["scene"], "proprio_dim": 10, "chunk_size": self.chunk_size}


class NaNPolicy(ConstantPolicy):
    """Returns NaN from the second chunk on."""

    def act(self, observation: Any) -> np.ndarray:
        chunk = super().act(observation)
        if self.calls > 1:
            chunk[-1, 0] = np.nan
        return chunk

    def metadata(self) -> dict[str, Any]:
        return {"name": "nan"}


class WrongShapePolicy(ConstantPolicy):
    """Returns [H, 7] chunks (not a multiple of 10)."""

    def act(self, observation: Any) -> np.ndarray:
        return super().act(observation)[:, :7]

    def metadata(self) -> dict[str, Any]:
        return {"name": "wrong_shape"}


class CrashingPolicy(ConstantPolicy):
    """Raises inside ``act`` (a bug in the policy, not a bad output)."""

    def act(self, observation: Any) -> np.ndarray:
        raise ZeroDivisionError("policy bug")

    def metadata(self) -> dict[str, Any]:
        return {"name": "crashing"}
