"""Scripted-expert demonstrations written straight into a Zarr episode store (foundry-action's format).

Each episode: reset(seed) -> at every control step record the observation and the expert's action,
then step; the episode ends when the task succeeds or times out. Workers are separate processes (one
env each, built from the registry); episodes are written by the parent in seed order, so the output
is deterministic for a given seed range. Demo seeds start at 1,000,000 by default so they never
overlap evaluation seeds (LBM Eval uses scenario index + 100 and + 100,000,000). ``out`` is never
a folder we did not write: ``append`` adds to an existing store (or creates one) and deletes nothing
but a crashed writer's uncommitted tail; otherwise a new store is written beside ``out`` and swapped
in, replacing an existing store only with ``overwrite`` (``foundry_action.ownership``). Test:
``pytest packages/foundry-eval/tests/test_eval_sim_demos.py``.
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

if TYPE_CHECKING:
    from foundry_action.frame_codecs import FrameEncoding

DEMO_SEED_START = 1_000_000
SEMANTICS = {
    "action": "absolute TCP target at this step: xyz (m, world), rot6d (first two rows of R_WG), "
    "gripper opening (m); sent by the scripted expert",
    "proprio": "measured TCP pose before the action: xyz (m, world), rot6d (first two rows of R_WG), "
    "gripper opening (m)",
}


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


def rollout_expert(env: Any, seed: int) -> dict[str, Any]:
    """Run the scripted expert for one episode; return per-step arrays and episode metadata."""
    obs = env.reset(seed)
    expert = env.expert()
    actions, proprios = [], []
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in env.camera_names}
    while not env.done():
        action = np.asarray(expert.act(obs), dtype=np.float32)
        actions.append(action)
        proprios.append(np.asarray(obs["proprio"], dtype=np.float32))
        for cam in env.camera_names:
            frames[cam].append(obs["images"][cam])
        obs = env.step(action)
    arrays: dict[str, np.ndarray] = {
        "action": np.stack(actions) if actions else np.zeros((0, 10), np.float32),
        "proprio": np.stack(proprios) if proprios else np.zeros((0, 10), np.float32),
    }
    for cam, seq in frames.items():
        arrays[f"camera/{cam}"] = np.stack(seq)
    return {
        "arrays": arrays,
        "success": bool(env.is_success()),
        "instruction": env.instruction,
        "seed": int(seed),
        "duration_s": float(env.time),
    }


_WORKER_ENV: Any = None


def _worker_init(node: Mapping[str, Any]) -> None:
    global _WORKER_ENV
    from foundry_core.plugins import get_registry

    _WORKER_ENV = get_registry().build("task", dict(node))


def _worker_episode(seed: int) -> dict[str, Any]:
    return rollout_expert(_WORKER_ENV, seed)


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
) -> DemoSummary:
    """Write ``episodes`` expert episodes of env ``node`` (``{"name": task, **config}``) to ``out``.

    Without ``keep_failures`` only successful episodes are stored and seeds are tried in order until
    ``episodes`` are stored (at most ``max_attempts``, default 3x). ``on_episode(result, stored)`` is
    called after every attempt (for a progress bar). ``frames``: the camera-frame encoding of a new store
    (default lossless); appending keeps the store's own and refuses a different one.
    """
    from foundry_action.ownership import check_destination, install, prepare_partial
    from foundry_action.store import EpisodeWriter, is_store
    from foundry_core.errors import DataError
    from foundry_core.plugins import get_registry

    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    max_attempts = max_attempts if max_attempts is not None else (episodes if keep_failures else 3 * episodes)
    if append and overwrite:
        raise ConfigError(
            "append and overwrite exclude each other: append adds to the store, overwrite replaces it"
        )
    out = Path(out)
    if append and Path(out).exists() and not is_store(out):
        check_destination(out)  # an empty folder is fine; anything else that is not a store is refused
    target = out
    if not append:
        check_destination(out, overwrite=overwrite)
        target = prepare_partial(out)  # written beside out and swapped in when complete
    env = get_registry().build("task", dict(node), where=f"task {node.get('name')!r}")
    cameras = {cam: (env.cfg.image_size, env.cfg.image_size) for cam in env.camera_names}
    task_name = env.task_name
    registry_name = str(node["name"])
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
                    source=getattr(env, "demo_source", "drake-expert"),
                    extra={"seed": result["seed"], "duration_s": result["duration_s"]},
                )
                stored += 1
            if on_episode is not None:
                on_episode(result, stored)

        with writer:
            seed = seed_start
            if workers == 1:
                while stored < episodes and attempted < max_attempts:
                    consume(rollout_expert(env, seed))
                    seed += 1
            else:
                env.close()
                ctx = get_context("spawn")
                with ProcessPoolExecutor(
                    workers, mp_context=ctx, initializer=_worker_init, initargs=(dict(node),)
                ) as pool:
                    while stored < episodes and attempted < max_attempts:
                        batch = min(max(episodes - stored, 1), max_attempts - attempted, 2 * workers)
                        for result in pool.map(_worker_episode, range(seed, seed + batch)):
                            if stored < episodes:
                                consume(result)
                        seed += batch
        if stored < episodes:
            raise ConfigError(
                f"{task_name}: only {stored} of {episodes} episodes succeeded after {attempted} attempts "
                f"(seeds {seed_start}..{seed_start + attempted - 1}); use --keep-failures to store failures too"
            )
    except BaseException as exc:
        if target != out:
            shutil.rmtree(
                target, ignore_errors=True
            )  # the unfinished new store; the previous one is untouched
        if isinstance(exc, OSError):
            raise DataError(
                f"{exc.filename or target}: {exc.strerror or exc} (while writing demos to {out})"
            ) from exc
        raise
    if target != out:
        install(target, out)
    return DemoSummary(task_name, attempted, stored, successes, steps, time.perf_counter() - start, str(out))
