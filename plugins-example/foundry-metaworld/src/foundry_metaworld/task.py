"""Meta-World tasks as Foundry ``task`` components: seeded reset, one camera, 4-D state and action.

The protocol is the one Meta-World results are commonly reported with (LeRobot's): the policy sees one
rendered camera, the 4-D state (hand xyz + gripper distance, the first four entries of Meta-World's
observation) and the instruction; it sends Meta-World's own 4-D action (end-effector displacement
command + gripper effort, each in [-1, 1]); an episode ends at success or after ``max_steps`` (500)
steps of 12.5 ms. The scripted expert is ``metaworld.policies``' policy for the task: it reads the full
39-D state (object and goal positions), which the learned policy never sees.

Each seed draws the task's initial object and goal positions from Meta-World's own randomization
space (``env.seed(seed)`` + ``seeded_rand_vec``), so demonstration and evaluation seeds (the rollout
runner's) give disjoint, reproducible scenes.

Rendering goes through ``mujoco.Renderer`` directly (the gym ``rgb_array`` path is ~10x slower) with
shadows and reflections off; the ``corner`` camera comes out upside down and is rotated 180 degrees.
``MUJOCO_GL`` defaults to ``egl`` (headless CPU rendering) when unset.
Test: ``uv run pytest plugins-example/foundry-metaworld/tests``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from foundry_core.errors import ConfigError, FoundryError
from foundry_metaworld.catalog import MT50, TaskInfo

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
_ROTATE_180 = frozenset({"corner"})
GL_BACKENDS = ("egl", "osmesa", "glfw")
SEMANTICS = {
    "action": "Meta-World action: end-effector displacement command xyz and gripper effort, each in [-1, 1]",
    "proprio": "Meta-World state: hand position xyz (m) and normalized gripper distance, before the action",
}


class RenderingUnavailable(FoundryError):
    """MuJoCo cannot create an OpenGL context with any backend tried."""


def _probe_backend(backend: str) -> str | None:
    """None when MuJoCo can render with ``backend`` (checked in a fresh process), else the error."""
    code = "import mujoco; ctx = mujoco.GLContext(8, 8); ctx.make_current(); ctx.free()"
    env = {**os.environ, "MUJOCO_GL": backend}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "timed out"
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


def rendering_error(exc: BaseException) -> RenderingUnavailable:
    """An error that says which ``MUJOCO_GL`` backends were tried and which, if any, works."""
    current = os.environ.get("MUJOCO_GL", "")
    results = {b: _probe_backend(b) for b in GL_BACKENDS}
    working = [b for b, err in results.items() if err is None]
    tried = "; ".join(f"{b}: {'ok' if err is None else err}" for b, err in results.items())
    hint = (
        f"set MUJOCO_GL={working[0]} before starting Foundry"
        if working
        else "install an OpenGL backend (e.g. `apt-get install libegl1` for egl or `libosmesa6` for osmesa), "
        "or evaluate with --cameras none"
    )
    return RenderingUnavailable(
        f"MuJoCo rendering failed with MUJOCO_GL={current!r} ({exc}); backends tried: {tried}; {hint}"
    )


class MetaWorldTask:
    """One Meta-World task behind the ``foundry_core.interfaces.Task`` contract (see the module docstring)."""

    info: ClassVar[TaskInfo]
    task_name: ClassVar[str] = ""
    action_dim: int = 4
    proprio_dim: int = 4
    #: Actions are Meta-World's 4-D vectors, not the 10-per-arm pose format of the policy server.
    pose_actions: ClassVar[bool] = False
    field_semantics: ClassVar[dict[str, str]] = SEMANTICS
    demo_source: ClassVar[str] = "metaworld scripted expert"

    @dataclass(kw_only=True)
    class Config:
        """Settings of every Meta-World task.

        Attributes:
            image_size: square image side in pixels.
            cameras: MuJoCo camera names (one, ``corner``, in the common protocol); empty = no rendering.
            max_steps: episode cap in control steps (500 in the common protocol; Meta-World allows <= 500).
        """

        image_size: int = 64
        cameras: list[str] = field(default_factory=lambda: ["corner"])
        max_steps: int = 500

    def __init__(self, cfg: Config | None = None) -> None:
        cfg = cfg if cfg is not None else self.Config()
        where = f"task {self.info.registry_name}"
        unknown = [c for c in cfg.cameras if c not in CAMERAS]
        if unknown or len(set(cfg.cameras)) != len(cfg.cameras):
            raise ConfigError(f"{where}: cameras {cfg.cameras} must be distinct names from {list(CAMERAS)}")
        if cfg.image_size < 8:
            raise ConfigError(f"{where}: image_size must be >= 8, got {cfg.image_size}")
        if not 1 <= cfg.max_steps <= 500:
            raise ConfigError(
                f"{where}: max_steps must be in [1, 500] (Meta-World's path length), got {cfg.max_steps}"
            )
        self.cfg = cfg
        self.camera_names = list(cfg.cameras)
        self.instruction = self.info.instruction
        os.environ.setdefault("MUJOCO_GL", "egl")
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        self._env: Any = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{self.info.env_id}-goal-observable"]()
        self.control_dt = float(self._env.dt)
        self.time_limit_s = cfg.max_steps * self.control_dt
        self._renderer: Any = None
        self._state = np.zeros(39)
        self._steps = 0
        self._success = False
        self.seed: int | None = None

    @classmethod
    def from_config(cls, cfg: Config, ctx: Any = None) -> MetaWorldTask:
        return cls(cfg)

    # ------------------------------------------------------------------ Task API
    def reset(self, seed: int) -> dict[str, Any]:
        """Draw the scene of ``seed`` from the task's randomization space; return the first observation."""
        if self._env is None:
            raise RuntimeError(f"{self.task_name}: reset() after close()")
        self.seed = int(seed)
        self._env.seed(self.seed % 2**32)
        self._env.seeded_rand_vec = True
        self._env._freeze_rand_vec = False  # draw a new scene from np_random at every reset
        state, _ = self._env.reset()
        self._state = np.asarray(state, dtype=np.float64)
        self._steps = 0
        self._success = False
        return self.observation()

    def step(self, action: Any) -> dict[str, Any]:
        """Apply one 4-D Meta-World action (clipped to [-1, 1]) for one control step."""
        if self.seed is None:
            raise RuntimeError(f"{self.task_name}: step() called before reset()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.action_dim,) or not np.all(np.isfinite(a)):
            raise ValueError(
                f"{self.task_name}: action must be {self.action_dim} finite values, got {action!r}"
            )
        state, _reward, _terminated, _truncated, info = self._env.step(
            np.clip(a, -1.0, 1.0).astype(np.float32)
        )
        self._state = np.asarray(state, dtype=np.float64)
        self._steps += 1
        self._success = self._success or bool(info.get("success", 0.0) > 0.0)
        return self.observation()

    def is_success(self) -> bool:
        return self._success

    def done(self) -> bool:
        """True once the task succeeded or ``max_steps`` steps were taken."""
        return self._success or self._steps >= self.cfg.max_steps

    @property
    def time(self) -> float:
        return self._steps * self.control_dt

    def random_actions(self, rng: np.random.Generator, chunk_size: int) -> np.ndarray:
        """A chunk of uniform random Meta-World actions (the ``random`` baseline policy)."""
        return rng.uniform(-1.0, 1.0, size=(chunk_size, self.action_dim)).astype(np.float32)

    def expert(self) -> _ScriptedExpert:
        """Meta-World's scripted policy for this task (reads the full simulator state)."""
        return _ScriptedExpert(self)

    def observation(self) -> dict[str, Any]:
        images = {cam: self._render(cam) for cam in self.camera_names}
        return {
            "images": images,
            "proprio": self._state[:4].astype(np.float32),
            "instruction": self.instruction,
        }

    def close(self) -> None:
        """Release the renderer and the simulator (the task cannot be used afterwards)."""
        if self._renderer is not None:
            self._renderer.close()
        self._renderer = None
        if self._env is not None:
            self._env.close()
        self._env = None
        self.seed = None

    # ------------------------------------------------------------------ helpers
    def _render(self, camera: str) -> np.ndarray:
        import mujoco

        if self._renderer is None:
            from foundry_eval.sim.llvm_guard import preload_triton

            preload_triton()  # before Mesa's LLVM is loaded (a later `import triton` would segfault)
            size = self.cfg.image_size
            try:
                self._renderer = mujoco.Renderer(self._env.model, size, size)
            except Exception as exc:  # no GL context: say which backends work
                raise rendering_error(exc) from exc
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self._renderer.update_scene(self._env.data, camera=camera)
        image = self._renderer.render()
        return np.ascontiguousarray(image[::-1, ::-1]) if camera in _ROTATE_180 else image.copy()


class _ScriptedExpert:
    """``act(obs) -> float32 [4]`` from Meta-World's policy for the task, on the full simulator state."""

    def __init__(self, task: MetaWorldTask) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self.task = task
        self.policy = ENV_POLICY_MAP[task.info.env_id]()

    def act(self, obs: Any = None) -> np.ndarray:
        import warnings

        with warnings.catch_warnings():  # "Constant(s) may be too high": the env clips, as we do
            warnings.simplefilter("ignore", UserWarning)
            action = self.policy.get_action(self.task._state)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)


def _task_class(info: TaskInfo) -> type[MetaWorldTask]:
    doc = f"Meta-World ``{info.env_id}`` ({info.difficulty}): {info.instruction}."
    attrs = {"info": info, "task_name": info.task_name, "__doc__": doc, "__module__": __name__}
    return type(info.task_name, (MetaWorldTask,), attrs)


# One class per task, named like its results.json task (``MetaworldPickPlace``), for the registry.
for _info in MT50.values():
    globals()[_info.task_name] = _task_class(_info)
