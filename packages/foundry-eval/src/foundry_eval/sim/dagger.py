"""DAgger-style relabelling (Ross et al. 2011): a trained policy drives, the scripted expert labels.

Plain demonstrations only show states on the expert's own path; a policy that drifts off it meets
states it was never taught (compounding error). Here the env executes the *policy's* action (with
probability ``1 - beta`` per step; the expert's own with ``beta``), while every step records the
scripted expert's action at the state the policy reached, so the store gains labels exactly where the
policy goes wrong. Appended to the demonstrations, a retrained policy learns the way back.

The expert is a waypoint follower that integrates its own command (``WaypointExpert``): after every
step the policy drove, it takes over from the pose the robot is commanded to now (``take_over``), so
its next label is the bounded step the expert itself would take from there toward its current
waypoint. Its plan still advances on the *measured* gripper pose and re-reads the objects' true poses,
so it re-aims where the policy pushed or dropped things; labels are the expert's, never the policy's.

Every episode is stored (a failed rollout holds the most useful labels); its ``success`` says whether
the rollout succeeded, its metadata carries ``source: dagger`` and the settings below. Reproducible:
the policy session and the beta coin are seeded by the episode seed.
Test: ``pytest packages/foundry-eval/tests/test_eval_sim_dagger.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foundry_core.errors import ConfigError

#: DAgger rollouts start here, apart from clean (1,000,000) and recovery (2,000,000) demo seeds.
DAGGER_SEED_START = 3_000_000
SOURCE = "dagger"


@dataclass(frozen=True)
class DaggerSpec:
    """Which policy drives a relabelled rollout.

    Attributes:
        policy: export folder of the trained policy.
        beta: probability that a step executes the expert's action instead of the policy's (0 = the
            policy drives every step, the usual choice after the first DAgger round).
        execute_steps: steps of each predicted chunk the policy executes (as in ``foundry eval run``).
        seed: stream of the beta coin; an episode's draws depend only on (``seed``, its seed).
        device: torch device of the policy.
    """

    policy: str
    beta: float = 0.0
    execute_steps: int = 4
    seed: int = 0
    device: str = "cpu"

    def check(self, option: Any = lambda f: f"dagger.{f}") -> None:
        """One ConfigError naming the bad field as the user spelled it (``option(field)``)."""
        if not (Path(self.policy) / "foundry_export.json").is_file():
            raise ConfigError(
                f"{option('policy')}: {self.policy} is not a policy export (no foundry_export.json)"
            )
        if not (np.isfinite(self.beta) and 0 <= self.beta <= 1):
            raise ConfigError(f"{option('beta')} must be in [0, 1], got {self.beta}")
        if self.execute_steps < 1:
            raise ConfigError(f"{option('execute_steps')} must be >= 1, got {self.execute_steps}")
        if self.seed < 0:
            raise ConfigError(f"{option('seed')} must be >= 0, got {self.seed}")

    def as_meta(self) -> dict[str, Any]:
        """Episode metadata: the settings and a fingerprint of the policy's weights (the folder may move)."""
        return {
            "dagger_policy": str(self.policy),
            "dagger_policy_sha256": weights_fingerprint(self.policy),
            "dagger_beta": self.beta,
            "dagger_execute_steps": self.execute_steps,
            "dagger_seed": self.seed,
        }


def weights_fingerprint(export_dir: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of the export's safetensors files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(Path(export_dir).rglob("*.safetensors")):
        digest.update(path.relative_to(export_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class PolicyDriver:
    """Drives one task's DAgger rollouts with an in-process policy session (see the module docstring)."""

    def __init__(self, spec: DaggerSpec, env: Any, task: str) -> None:
        from foundry_eval.rollout.runner import RunSpec, make_client

        if not callable(getattr(env, "commanded_pose", None)):
            raise ConfigError(
                f"task {task!r}: DAgger needs the task's commanded_pose() (the pose the robot is sent to)"
            )
        self.spec = spec
        run = RunSpec(
            policy=spec.policy,
            server=None,
            tasks=((task, {"name": task}),),
            execute_steps=spec.execute_steps,
            device=spec.device,
        )
        self.client = make_client(run, env)
        self._client_id = ""
        self._rng = np.random.default_rng(0)

    def start(self, seed: int) -> None:
        """A new episode: a fresh, seeded policy session and beta coin."""
        if self._client_id:
            self.client.end(self._client_id)
        self._client_id = f"dagger-{seed}"
        self.client.reset(self._client_id, int(seed))
        self._rng = np.random.default_rng([self.spec.seed, int(seed)])

    @staticmethod
    def check_expert(expert: Any, task: str) -> None:
        """The expert must be able to continue from the policy's pose (``take_over``)."""
        if not callable(getattr(expert, "take_over", None)):
            raise ConfigError(
                f"task {task!r}: DAgger needs an expert with take_over(xyz, yaw); {type(expert).__name__} has none"
            )

    def choose(
        self, obs: dict[str, Any], expert_action: np.ndarray, time_s: float
    ) -> tuple[np.ndarray, bool]:
        """(action to execute, whether the policy chose it). The policy is queried every step, so its
        chunks keep their timing also on the steps the expert executes."""
        action = np.asarray(self.client.step(self._client_id, obs, time_s), dtype=np.float32)
        if self.spec.beta > 0 and self._rng.random() < self.spec.beta:
            return expert_action, False
        return action, True

    def close(self) -> None:
        if self._client_id:
            self.client.end(self._client_id)
            self._client_id = ""
        self.client.close()
