"""Scripted-expert demonstrations written straight into a Zarr episode store (foundry-action's format).

Each episode: reset(seed) -> at every control step record the observation and the expert's action,
then step; the episode ends when the task succeeds or times out. Workers are separate processes (one
env each, built from the registry); episodes are written by the parent in seed order, so the output
is deterministic for a given seed range. Demo seeds start at 1,000,000 by default so they never
overlap evaluation seeds (LBM Eval uses scenario index + 100 and + 100,000,000). ``out`` is never
a folder we did not write: ``append`` adds to an existing store (or creates one) and deletes nothing
but a crashed writer's uncommitted tail; otherwise a new store is written beside ``out`` and swapped
in, replacing an existing store only with ``overwrite`` (``foundry_action.ownership``).

Recovery demonstrations (DART, Laskey et al. 2017): with an ``ActionNoise`` the env executes the
expert's action plus a seeded perturbation of the TCP position and yaw, while the episode records the
expert's CLEAN action as the label. States then leave the expert's own path and the labels show how
the expert gets back, which plain demonstrations never do. Episodes are still success-labelled by the
task; each one carries its noise settings, and the store lists every generation run in ``demo_runs``.
Test: ``pytest packages/foundry-eval/tests/test_eval_sim_demos.py``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from foundry_core.errors import ConfigError
from foundry_eval.sim.pose import pose_to_vec10, top_down_rotation, vec10_to_pose, yaw_of

if TYPE_CHECKING:
    from foundry_action.frame_codecs import FrameEncoding
    from foundry_eval.sim.dagger import DaggerSpec, PolicyDriver

DEMO_SEED_START = 1_000_000
#: Recovery demos start here, so they never share an initial state with the clean demos (or evaluation).
RECOVERY_SEED_START = 2_000_000
SEMANTICS = {
    "action": "absolute TCP target at this step: xyz (m, world), rot6d (first two rows of R_WG), "
    "gripper opening (m); the scripted expert's command (in recovery episodes, those with noise_* "
    "metadata, the env executed this command plus noise)",
    "proprio": "measured TCP pose before the action: xyz (m, world), rot6d (first two rows of R_WG), "
    "gripper opening (m)",
}


@dataclass(frozen=True)
class ActionNoise:
    """Perturbation of the executed expert action (the recorded label stays the clean action).

    The offset follows an AR(1) process per control step, ``o_t = c * o_(t-1) + sqrt(1 - c^2) * e_t``
    with ``e_t ~ N(0, std^2)``: its stationary std is ``xyz`` / ``yaw`` whatever the correlation ``c``;
    a larger ``c`` makes slower, larger-looking drifts (the kind of error a policy makes) instead of jitter.

    Attributes:
        xyz: std of the TCP position offset (m); 0 = no position noise.
        yaw: std of the gripper yaw offset (rad); 0 = no yaw noise.
        correlation: AR(1) coefficient in [0, 1); 0 = independent offsets at every step.
        seed: noise stream; an episode's offsets depend only on (``seed``, the episode's seed).
    """

    xyz: float = 0.0
    yaw: float = 0.0
    correlation: float = 0.0
    seed: int = 0

    def check(self, option: Callable[[str], str] = lambda f: f"noise.{f}") -> None:
        """One ConfigError naming the bad field as the user spelled it (``option(field)``)."""
        for name in ("xyz", "yaw"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"{option(name)} must be a finite number >= 0, got {value}")
        if not (np.isfinite(self.correlation) and 0 <= self.correlation < 1):
            raise ConfigError(f"{option('correlation')} must be in [0, 1), got {self.correlation}")
        if self.seed < 0:
            raise ConfigError(f"{option('seed')} must be >= 0, got {self.seed}")

    @property
    def active(self) -> bool:
        return self.xyz > 0 or self.yaw > 0

    def as_meta(self) -> dict[str, float | int]:
        return {
            "noise_xyz": self.xyz,
            "noise_yaw": self.yaw,
            "noise_correlation": self.correlation,
            "noise_seed": self.seed,
        }


class _NoiseProcess:
    """The AR(1) offsets of one episode, seeded by (noise seed, episode seed)."""

    def __init__(self, noise: ActionNoise, episode_seed: int) -> None:
        self.noise = noise
        self.rng = np.random.default_rng([noise.seed, int(episode_seed)])
        self.offset = np.zeros(4)  # xyz, yaw
        self.std = np.array([noise.xyz] * 3 + [noise.yaw])
        self.started = False

    def perturb(self, action: np.ndarray) -> np.ndarray:
        c = self.noise.correlation
        eps = self.rng.standard_normal(4) * self.std
        self.offset = eps if not self.started else c * self.offset + np.sqrt(1 - c * c) * eps
        self.started = True
        xyz, R, opening = vec10_to_pose(action)
        T = np.eye(4)
        T[:3, :3] = top_down_rotation(yaw_of(R) + self.offset[3])
        T[:3, 3] = xyz + self.offset[:3]
        return pose_to_vec10(T, opening)


@dataclass
class DemoSummary:
    """What a demo run produced."""

    task: str
    attempted: int
    stored: int
    successes: int
    steps: int
    seconds: float
    out: str

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.attempted, 1)


def rollout_expert(
    env: Any,
    seed: int,
    noise: ActionNoise | None = None,
    tail_steps: int = 0,
    driver: PolicyDriver | None = None,
) -> dict[str, Any]:
    """Run the scripted expert for one episode; return per-step arrays and episode metadata.

    With an active ``noise`` the env executes the perturbed action; the recorded action is the clean one.
    ``tail_steps``: keep recording the expert this many steps after the task first succeeds. The task
    ends an episode at its first success, which for a placement is one or two steps into the release:
    without a tail the data hardly shows the gripper opening. The episode counts as a success only if
    the task still holds after the tail. Where the expert's tail is a retreat and a hold (push_to_target
    lifts off a placed block), leave it 0: a policy copies the hold a few centimetres early and stays
    (push 3/20 with an 8-step tail, 12/20 without; packages/foundry-eval/docs/tasks.md).
    ``driver`` (DAgger relabelling, ``foundry_eval.sim.dagger``): a policy chooses the executed action
    and the expert takes over from the pose it commanded; the recorded action stays the expert's.
    """
    obs = env.reset(seed)
    expert = env.expert()
    if driver is not None:
        driver.check_expert(expert, str(getattr(env, "task_name", "")))
        driver.start(seed)
    process = _NoiseProcess(noise, seed) if noise is not None and noise.active else None
    actions, proprios = [], []
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in env.camera_names}
    success_step: int | None = None
    while True:
        if success_step is None and env.is_success():
            success_step = len(actions)
        if (success_step is None and env.done()) or (
            success_step is not None and len(actions) >= success_step + tail_steps
        ):
            break
        action = np.asarray(expert.act(obs), dtype=np.float32)
        actions.append(action)
        proprios.append(np.asarray(obs["proprio"], dtype=np.float32))
        for cam in env.camera_names:
            frames[cam].append(obs["images"][cam])
        executed, by_policy = action if process is None else process.perturb(action), False
        if driver is not None:
            executed, by_policy = driver.choose(obs, executed, float(env.time))
        obs = env.step(executed)
        if by_policy:
            expert.take_over(*env.commanded_pose())
    arrays: dict[str, np.ndarray] = {
        "action": np.stack(actions) if actions else np.zeros((0, 10), np.float32),
        "proprio": np.stack(proprios) if proprios else np.zeros((0, 10), np.float32),
    }
    for cam, seq in frames.items():
        arrays[f"camera/{cam}"] = np.stack(seq)
    return {
        "arrays": arrays,
        "success": success_step is not None and bool(env.is_success()),
        "success_step": success_step,
        "instruction": env.instruction,
        "seed": int(seed),
        "duration_s": float(env.time),
    }


_WORKER_ENV: Any = None
_WORKER_NOISE: ActionNoise | None = None
_WORKER_TAIL = 0
_WORKER_DRIVER: PolicyDriver | None = None


def _worker_init(
    node: Mapping[str, Any], noise: ActionNoise | None, tail_steps: int, dagger: DaggerSpec | None
) -> None:
    global _WORKER_ENV, _WORKER_NOISE, _WORKER_TAIL, _WORKER_DRIVER
    from foundry_core.plugins import get_registry

    _WORKER_ENV = get_registry().build("task", dict(node))
    _WORKER_NOISE = noise
    _WORKER_TAIL = tail_steps
    if dagger is not None:
        from foundry_eval.sim.dagger import PolicyDriver

        _WORKER_DRIVER = PolicyDriver(dagger, _WORKER_ENV, str(node["name"]))


def _worker_episode(seed: int) -> dict[str, Any]:
    return rollout_expert(_WORKER_ENV, seed, _WORKER_NOISE, _WORKER_TAIL, _WORKER_DRIVER)


def generate_demos(
    node: Mapping[str, Any],
    *,
    episodes: int,
    out: str | Path,
    workers: int = 1,
    seed_start: int = DEMO_SEED_START,
    keep_failures: bool = False,
    append: bool = False,
    overwrite: bool = False,
    max_attempts: int | None = None,
    on_episode: Callable[[dict[str, Any], int], None] | None = None,
    frames: FrameEncoding | None = None,
    noise: ActionNoise | None = None,
    tail_steps: int = 0,
    dagger: DaggerSpec | None = None,
) -> DemoSummary:
    """Write ``episodes`` expert episodes of env ``node`` (``{"name": task, **config}``) to ``out``.

    Without ``keep_failures`` only successful episodes are stored and seeds are tried in order until
    ``episodes`` are stored (at most ``max_attempts``, default 3x). ``on_episode(result, stored)`` is
    called after every attempt (for a progress bar). ``frames``: the camera-frame encoding of a new store
    (default lossless); appending keeps the store's own and refuses a different one. ``noise``: record
    recovery demonstrations (see the module docstring); its settings go into every episode's metadata.
    ``tail_steps``: expert steps recorded after the first success (see ``rollout_expert``).
    ``dagger``: the policy drives and the expert labels (``foundry_eval.sim.dagger``); every episode is
    stored, failed rollouts too (``keep_failures`` is implied), with ``source: dagger``.
    """
    from foundry_action.ownership import check_destination, install, prepare_partial
    from foundry_action.store import EpisodeWriter, is_store, open_store
    from foundry_core.errors import DataError
    from foundry_core.plugins import get_registry

    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if tail_steps < 0:
        raise ConfigError(f"tail_steps must be >= 0, got {tail_steps}")
    if noise is not None:
        noise.check()
    if dagger is not None:
        dagger.check()
        keep_failures = True
    max_attempts = max_attempts if max_attempts is not None else (episodes if keep_failures else 3 * episodes)
    if append and overwrite:
        raise ConfigError(
            "append and overwrite exclude each other: append adds to the store, overwrite replaces it"
        )
    out = Path(out)
    if append and Path(out).exists() and not is_store(out):
        check_destination(out)  # an empty folder is fine; anything else that is not a store is refused
    earlier_runs = list(open_store(out).attrs.get("demo_runs", [])) if append and is_store(out) else []
    target = out
    if not append:
        check_destination(out, overwrite=overwrite)
        target = prepare_partial(out)  # written beside out and swapped in when complete
    env = get_registry().build("task", dict(node), where=f"task {node.get('name')!r}")
    cameras = {cam: (env.cfg.image_size, env.cfg.image_size) for cam in env.camera_names}
    task_name = env.task_name
    registry_name = str(node["name"])
    driver = None
    if dagger is not None:
        from foundry_eval.sim.dagger import SOURCE, PolicyDriver

        driver = PolicyDriver(dagger, env, registry_name) if workers == 1 else None
    start = time.perf_counter()
    attempted = stored = successes = steps = 0
    try:
        writer = EpisodeWriter(
            target,
            fps=1.0 / env.control_dt,
            fields={"action": (env.action_dim,), "proprio": (env.proprio_dim,)},
            cameras=cameras,
            semantics=getattr(env, "field_semantics", SEMANTICS),
            attrs={
                "source": getattr(env, "demo_source", "foundry-eval drake expert"),
                "task": str(node.get("name")),
            },
            mode="a" if append else "w",
            frames=frames,
        )

        noise_meta = noise.as_meta() if noise is not None and noise.active else {}
        dagger_meta = dagger.as_meta() if dagger is not None else {}
        source = SOURCE if dagger is not None else getattr(env, "demo_source", "drake-expert")

        def consume(result: dict[str, Any]) -> None:
            nonlocal attempted, stored, successes, steps
            attempted += 1
            successes += result["success"]
            steps += len(result["arrays"]["action"])
            if (result["success"] or keep_failures) and stored < episodes:
                writer.append_episode(
                    result["arrays"],
                    task=registry_name,  # configs (task_weights, tasks) name a task one way: its registry name
                    instruction=result["instruction"],
                    success=result["success"],
                    source=source,
                    extra={
                        "seed": result["seed"],
                        "duration_s": result["duration_s"],
                        "success_step": result["success_step"],
                        **noise_meta,
                        **dagger_meta,
                    },
                )
                stored += 1
            if on_episode is not None:
                on_episode(result, stored)

        with writer:
            seed = seed_start
            if workers == 1:
                while stored < episodes and attempted < max_attempts:
                    consume(rollout_expert(env, seed, noise, tail_steps, driver))
                    seed += 1
            else:
                env.close()
                ctx = get_context("spawn")
                with ProcessPoolExecutor(
                    workers,
                    mp_context=ctx,
                    initializer=_worker_init,
                    initargs=(dict(node), noise, tail_steps, dagger),
                ) as pool:
                    while stored < episodes and attempted < max_attempts:
                        batch = min(max(episodes - stored, 1), max_attempts - attempted, 2 * workers)
                        for result in pool.map(_worker_episode, range(seed, seed + batch)):
                            if stored < episodes:
                                consume(result)
                        seed += batch
            run = {
                "task": registry_name,
                "seed_start": seed_start,
                "attempted": attempted,
                "stored": stored,
                "tail_steps": tail_steps,
                **(noise or ActionNoise()).as_meta(),
                **dagger_meta,
            }
            writer.update_attrs({"demo_runs": [*earlier_runs, run]})
        if stored < episodes:
            raise ConfigError(
                f"{task_name}: only {stored} of {episodes} episodes succeeded after {attempted} attempts "
                f"(seeds {seed_start}..{seed_start + attempted - 1}); use --keep-failures to store failures too"
            )
    except BaseException as exc:
        if driver is not None:
            driver.close()
        if target != out:
            shutil.rmtree(
                target, ignore_errors=True
            )  # the unfinished new store; the previous one is untouched
        if isinstance(exc, OSError):
            raise DataError(
                f"{exc.filename or target}: {exc.strerror or exc} (while writing demos to {out})"
            ) from exc
        raise
    if driver is not None:
        driver.close()
    if target != out:
        install(target, out)
    return DemoSummary(task_name, attempted, stored, successes, steps, time.perf_counter() - start, str(out))
