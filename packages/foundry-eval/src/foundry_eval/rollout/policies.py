"""Built-in baseline policies (``--policy random`` / ``--policy expert``) and policy loading.

``random``: each chunk row commands the current pose moved by uniform noise (±5 cm) with a random
gripper opening (seeded per episode, so reruns are identical); a task with its own action format
(e.g. Meta-World's displacement commands) supplies ``random_actions(rng, chunk_size)`` instead. ``expert``: the env's privileged
scripted expert (``env.expert()`` after ``env.reset``), one action per chunk. An export folder is
loaded with foundry-action's ``Policy.from_pretrained``. Tested by ``tests/test_eval_rollout.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from foundry_core.errors import ComponentError, FoundryError
from foundry_core.interfaces import Policy, Task

ARM_DIM = 10
MAX_OPENING = 0.08


class RandomPolicy:
    """Random absolute targets around the current pose (proprio in the 10-per-arm action format)."""

    def __init__(
        self,
        chunk_size: int = 8,
        noise: float = 0.05,
        action_dim: int | None = None,
        sampler: Callable[[np.random.Generator, int], np.ndarray] | None = None,
    ) -> None:
        self.chunk_size = chunk_size
        self.noise = noise
        self.action_dim = action_dim
        self.sampler = sampler
        self._rng = np.random.default_rng(0)

    def reset(self) -> None:
        return None

    def seed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, observation: Any) -> np.ndarray:
        if self.sampler is not None:
            return np.asarray(self.sampler(self._rng, self.chunk_size), dtype=np.float32)
        proprio = np.asarray(observation["proprio"], dtype=np.float32)
        dim = self.action_dim or proprio.shape[0]
        if proprio.shape[0] != dim or dim % ARM_DIM:
            raise FoundryError(
                f"random policy: proprio has {proprio.shape[0]} values; it must be the action format "
                f"({ARM_DIM} per arm: xyz, rot6d, gripper) with {dim} values"
            )
        chunk = np.tile(proprio, (self.chunk_size, 1))
        for arm in range(dim // ARM_DIM):
            base = arm * ARM_DIM
            chunk[:, base : base + 3] += self._rng.uniform(-self.noise, self.noise, size=(self.chunk_size, 3))
            chunk[:, base + 9] = self._rng.uniform(0.0, MAX_OPENING, size=self.chunk_size)
        return chunk.astype(np.float32)

    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {"name": "random", "chunk_size": self.chunk_size, "noise": self.noise}
        if self.action_dim is not None:  # fixed size: what a server builds observations for
            md["proprio_dim"] = md["action_dim"] = self.action_dim
        return md


class ExpertPolicy:
    """The env's scripted expert as a Policy; must be reset after ``env.reset`` (the runner does)."""

    def __init__(self, env: Task) -> None:
        if not callable(getattr(env, "expert", None)):
            raise ComponentError(f"env {type(env).__name__} has no scripted expert (no expert() method)")
        self.env = env
        self._expert: Any = None

    def reset(self) -> None:
        self._expert = self.env.expert()

    def act(self, observation: Any) -> np.ndarray:
        if self._expert is None:
            raise RuntimeError("expert policy: act() before reset()")
        return np.asarray(self._expert.act(observation), dtype=np.float32)[None]

    def metadata(self) -> dict[str, Any]:
        return {"name": "expert", "skill_type": str(getattr(self.env, "task_name", ""))}


def load_exported_policy(export_dir: str | Path, device: str = "cpu") -> Policy:
    """Load an exported policy folder with foundry-action (imported lazily: it pulls in torch)."""
    path = Path(export_dir)
    if not path.is_dir():
        raise FoundryError(
            f"policy {str(export_dir)!r}: not a directory (expected an export folder, 'random' or 'expert')"
        )
    try:
        from foundry_action.policy import Policy as ActionPolicy
    except ImportError as exc:
        raise ComponentError(f"loading exported policies needs foundry_action.policy: {exc}") from exc
    return ActionPolicy.from_pretrained(str(path), device=device)


class ExportedPolicyFactory:
    """Picklable factory: loads ``export_dir`` on each call (the session pool calls it once per worker)."""

    def __init__(self, export_dir: str | Path, device: str = "cpu") -> None:
        self.export_dir = str(export_dir)
        self.device = device

    def __call__(self) -> Policy:
        return load_exported_policy(self.export_dir, self.device)
