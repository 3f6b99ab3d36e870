"""Rollout runner: N seeded episodes per task, in parallel worker processes, written as ``results.json``.

Layout and schema are the reference system's (LBM Eval): ``{root}/{model}/{Task}/rollouts/{timestamp}/
results.json``; videos go to ``.../{timestamp}/{Task}/demonstration_{i}/recording.mp4``. Episode seed =
``scenario_index + 100`` (+ 100,000,000 with ``use_eval_seed``, the default), so any worker count gives the
same results. Outcomes: success; failure (timeout, or an unusable policy output such as NaN or a wrong
shape: ``failure_message`` says which); crashed (an exception in the simulator or the policy:
``is_success: false``, ``total_time: 0``, the traceback in ``failure_message``, counted in ``num_crashed``).

The policy is reached through a :class:`~foundry_eval.serving.session.PolicyClient`: in-process sessions
or a gRPC client (``server="host:port"``; ``protocol="lbm"`` speaks LBM Eval's protocol), one code path. Workers use the spawn start
method; each builds its envs once and loads its policy once. Tested by ``tests/test_eval_rollout.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import pickle
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foundry_core.errors import FoundryError
from foundry_core.interfaces import Policy, Task
from foundry_eval.serving.codec import PolicyOutputError
from foundry_eval.serving.session import DEFAULT_EXECUTE_STEPS, PolicyClient

log = logging.getLogger(__name__)
SEED_OFFSET = 100
EVAL_SEED_OFFSET = 100_000_000
BUILTIN_POLICIES = ("random", "expert")


def episode_seed(scenario_index: int, use_eval_seed: bool = True) -> int:
    """LBM Eval's seed of a scenario."""
    return scenario_index + SEED_OFFSET + (EVAL_SEED_OFFSET if use_eval_seed else 0)


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs (picklable)."""

    policy: Any  # "random" | "expert" | export dir (str) | zero-argument factory | None (served)
    server: str | None
    tasks: tuple[tuple[str, dict[str, Any]], ...]  # (Task, env node)
    execute_steps: int = DEFAULT_EXECUTE_STEPS
    use_eval_seed: bool = True
    video_dirs: tuple[str | None, ...] = ()  # per task: the {timestamp} folder, or None
    video_format: str = "mp4"
    video_indices: range | None = None  # scenarios to record (None: all)
    device: str = "cpu"  # where an export folder's policy runs
    protocol: str = "foundry"  # wire protocol of `server`: "foundry" or "lbm"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


# ----------------------------------------------------------------------------- one episode


def run_episode(
    env: Task, client: PolicyClient, task: str, scenario_index: int, seed: int, *, frames: list | None = None
) -> dict[str, Any]:
    """Run one episode; returns its ``results.json`` evaluation (plus ``seed``, ``wall_time``).

    The env is reset before the policy, so env-bound policies (the scripted expert) see the new scene.
    ``frames``, when given, receives the camera images of every step.
    """
    from foundry_eval.video import tile_cameras

    start = time.perf_counter()
    client_id = f"{task}-{scenario_index}-{uuid.uuid4().hex}"
    sim_time = 0.0
    success = False
    message: str | None = None
    crashed = False
    max_steps = int(round(float(env.time_limit_s) / float(env.control_dt)))
    expected_dim = getattr(env, "action_dim", None)
    try:
        obs = env.reset(seed)
        client.reset(client_id, seed)
        for _ in range(max_steps):
            if frames is not None:
                frames.append(tile_cameras(obs["images"]))
            try:
                action = client.step(client_id, obs, sim_time)
                if expected_dim is not None and action.shape != (expected_dim,):
                    raise PolicyOutputError(
                        f"action has {action.shape[0]} values; {task} expects {expected_dim}"
                    )
            except PolicyOutputError as exc:
                message = f"policy error at t={sim_time:.1f} s: {exc}"
                break
            obs = env.step(action)
            sim_time = round(sim_time + float(env.control_dt), 9)
            if env.is_success():
                success = True
                break
        if frames is not None:
            frames.append(tile_cameras(obs["images"]))
    except Exception:
        crashed = True
        message = traceback.format_exc()
        sim_time = 0.0
    finally:
        try:
            client.end(client_id)
        except Exception as exc:  # the episode's outcome stands; the server evicts idle sessions
            log.warning("could not end policy session %s: %s", client_id, exc)
    record: dict[str, Any] = {
        "skill_type": task,
        "scenario_index": scenario_index,
        "is_success": success,
        "is_pending": False,
        "total_time": sim_time,
        "failure_message": message,
        "seed": seed,
        "wall_time": round(time.perf_counter() - start, 3),
        "crashed": crashed,
    }
    if not crashed:  # a crashed env's state is not this episode's end state (reset may not have run)
        record.update(measure_episode(env, f"{task} scenario {scenario_index}"))
    return record


def measure_episode(env: Task, where: str) -> dict[str, Any]:
    """``{"metrics": {...}}`` from the task's optional ``episode_metrics()``, ``{}`` when it has none.

    A metric that raises or returns something other than finite numbers does not change the episode's
    outcome: the record gets ``metrics_error`` (the exception, with its traceback) instead of
    ``metrics``, and a warning is logged, so the gap is visible in results.json and in the report.
    """
    from foundry_eval.results import check_metrics

    measure = getattr(env, "episode_metrics", None)
    if measure is None:
        return {}
    try:
        metrics = check_metrics(measure(), f"{type(env).__name__}.episode_metrics()")
    except Exception:
        error = traceback.format_exc()
        log.warning(
            "%s: episode_metrics() failed; the outcome stands, metrics_error records it:\n%s", where, error
        )
        return {"metrics_error": error}
    return {"metrics": metrics}


# ----------------------------------------------------------------------------- worker side


class Worker:
    """Per-process state: envs built once per task, policy clients created once (env-bound ones per task)."""

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.envs: dict[int, Task] = {}
        self.clients: dict[int | None, PolicyClient] = {}

    def env(self, task_id: int) -> Task:
        if task_id not in self.envs:
            from foundry_core.plugins import get_registry

            registry = get_registry()
            node = dict(self.spec.tasks[task_id][1])
            if self.spec.policy not in BUILTIN_POLICIES:
                node = match_policy_inputs(node, self.client(task_id).metadata(), registry)
            self.envs[task_id] = registry.build("task", node, where=f"task {node['name']!r}")
        return self.envs[task_id]

    def client(self, task_id: int) -> PolicyClient:
        builtin = self.spec.policy in BUILTIN_POLICIES
        key = task_id if builtin else None
        if key not in self.clients:
            client = make_client(self.spec, self.env(task_id) if builtin else None)
            client.metadata()  # loads the policy (or reaches the server) now: a failure stops the run
            self.clients[key] = client
        return self.clients[key]

    def run(self, task_id: int, scenario_index: int) -> dict[str, Any]:
        task = self.spec.tasks[task_id][0]
        env, client = self.env(task_id), self.client(task_id)
        video_dir = self.spec.video_dirs[task_id] if self.spec.video_dirs else None
        if self.spec.video_indices is not None and scenario_index not in self.spec.video_indices:
            video_dir = None
        frames: list | None = [] if video_dir else None
        seed = episode_seed(scenario_index, self.spec.use_eval_seed)
        result = run_episode(env, client, task, scenario_index, seed, frames=frames)
        if video_dir and frames and frames[0] is not None:
            from foundry_eval.video import write_video

            path = (
                Path(video_dir)
                / task
                / f"demonstration_{scenario_index}"
                / f"recording.{self.spec.video_format}"
            )
            write_video(frames, path, fps=1.0 / float(env.control_dt))
        return result

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        for env in self.envs.values():
            closer = getattr(env, "close", None)
            if callable(closer):
                closer()


def match_policy_inputs(node: dict[str, Any], metadata: Mapping[str, Any], registry: Any) -> dict[str, Any]:
    """Render what the policy was trained on: the ``cameras`` and square ``image_size`` it declares
    become the env's defaults (values given explicitly for the task win)."""
    info = metadata.get("runtime_info", {})
    fields = {f.name for f in dataclasses.fields(registry.get("task", node["name"]).load().Config)}
    if "cameras" in fields and "cameras" not in node and "cameras" in info:
        node["cameras"] = list(json.loads(info["cameras"]))
    if "image_size" in fields and "image_size" not in node and "image_size" in info:
        size = json.loads(info["image_size"])
        sizes = set(size) if isinstance(size, list) else {size}
        if len(sizes) == 1:
            node["image_size"] = int(sizes.pop())
    return node


def make_client(spec: RunSpec, env: Task | None) -> PolicyClient:
    """The policy client of a worker: gRPC for a server address, in-process sessions otherwise."""
    if spec.server is not None and spec.protocol == "lbm":
        from foundry_eval.serving.lbm_client import LbmPolicyClient

        return LbmPolicyClient(spec.server)
    if spec.server is not None:
        from foundry_eval.serving.client import GrpcPolicyClient

        return GrpcPolicyClient(spec.server)
    from foundry_eval.rollout.policies import ExpertPolicy, ExportedPolicyFactory, RandomPolicy
    from foundry_eval.serving.session import InProcessClient, PolicySessions

    factory: Callable[[], Policy]
    if spec.policy == "random":
        factory = lambda: RandomPolicy(sampler=getattr(env, "random_actions", None))  # noqa: E731
    elif spec.policy == "expert":
        factory = lambda: ExpertPolicy(env)  # noqa: E731
    elif isinstance(spec.policy, str | Path):
        factory = ExportedPolicyFactory(spec.policy, spec.device)
    else:
        factory = spec.policy
    return InProcessClient(
        PolicySessions(factory, execute_steps=spec.execute_steps, pose_actions=pose_actions(spec))
    )


def pose_actions(spec: RunSpec) -> bool:
    """Whether the run's tasks take 10-per-arm pose actions; tasks with their own action vectors (e.g.
    Meta-World's) say ``pose_actions = False``. One policy cannot serve both kinds in one run."""
    from foundry_core.plugins import get_registry

    registry = get_registry()
    kinds = {
        bool(getattr(registry.get("task", node["name"]).load(), "pose_actions", True))
        for _, node in spec.tasks
    }
    if len(kinds) > 1:
        raise FoundryError(f"tasks {[t for t, _ in spec.tasks]} mix pose actions and other action vectors")
    return kinds.pop() if kinds else True


_WORKER: Worker | None = None


def _worker_run(job: tuple[RunSpec, int, int]) -> tuple[int, dict[str, Any]]:
    """Pool entry point: the worker's state is built lazily on its first job (an initializer that
    raised would make the pool respawn workers forever)."""
    global _WORKER
    spec, task_id, index = job
    if _WORKER is None or _WORKER.spec.run_id != spec.run_id:
        _WORKER = Worker(spec)
    return task_id, _WORKER.run(task_id, index)


# ----------------------------------------------------------------------------- driver


def _task_nodes(
    tasks: Iterable[str | Mapping[str, Any]], image_size: int | None, cameras: Sequence[str] | None
) -> list[tuple[str, dict[str, Any]]]:
    from foundry_core.plugins import get_registry
    from foundry_eval.results import normalize_task_name

    registry = get_registry()
    out = []
    for task in tasks:
        node = {"name": task} if isinstance(task, str) else dict(task)
        if "name" not in node:
            raise FoundryError(f"task {task!r}: missing 'name'")
        if image_size is not None:
            node["image_size"] = image_size
        if cameras is not None:
            node["cameras"] = list(cameras)
        cls = registry.get("task", str(node["name"])).load()
        registry.node("task", node, where=f"task {node['name']!r}")  # fail fast, before spawning
        out.append((str(getattr(cls, "task_name", "") or normalize_task_name(str(node["name"]))), node))
    names = [t for t, _ in out]
    if len(set(names)) != len(names):
        raise FoundryError(f"tasks: duplicate task in {names}")
    return out


def _check_budget(rollouts_dir: Path, task: str, indices: range, budget: int) -> None:
    """Refuse runs that would exceed the pre-committed budget or repeat scenarios of earlier runs."""
    if len(indices) > budget:
        raise FoundryError(f"{task}: {len(indices)} episodes exceed max_sample_size_per_model={budget}")
    done: set[int] = set()
    for path in sorted(rollouts_dir.glob("*/results.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("max_sample_size_per_model") != budget:
            raise FoundryError(
                f"{path}: max_sample_size_per_model={doc.get('max_sample_size_per_model')} differs from "
                f"this run's {budget}; a budget is fixed before the first episode"
            )
        done |= {int(e["scenario_index"]) for e in doc.get("evaluations", [])}
    if done & set(indices):
        raise FoundryError(
            f"{task}: scenarios {sorted(done & set(indices))[:5]}... were already evaluated under {rollouts_dir} "
            f"(continue with start_index={max(done) + 1})"
        )
    if len(done) + len(indices) > budget:
        raise FoundryError(
            f"{task}: {len(done)} episodes already under {rollouts_dir} + {len(indices)} new exceed "
            f"max_sample_size_per_model={budget}"
        )


def run_rollouts(
    policy: str | Path | Callable[[], Policy] | None,
    tasks: Sequence[str | Mapping[str, Any]],
    episodes: int,
    out_root: str | Path,
    model_name: str | None = None,
    workers: int = 1,
    *,
    server: str | None = None,
    protocol: str = "foundry",
    max_sample_size_per_model: int | None = None,
    start_index: int = 0,
    use_eval_seed: bool = True,
    execute_steps: int = DEFAULT_EXECUTE_STEPS,
    video: bool = False,
    video_format: str = "mp4",
    max_videos: int | None = None,
    image_size: int | None = None,
    cameras: Sequence[str] | None = None,
    timestamp: str | None = None,
    progress: bool = True,
    device: str = "cpu",
    threads: int | None = None,
) -> list[Path]:
    """Evaluate a policy on ``tasks`` and write one ``results.json`` per task; returns their paths.

    Args:
        policy: ``"random"``, ``"expert"``, an export folder, a picklable zero-argument factory
            returning a ``Policy``, or None with ``server`` (the policy lives in a policy server).
        tasks: env names (``push_to_target``) or env nodes ``{"name": ..., **fields}``.
        episodes: scenarios per task: indices ``start_index .. start_index + episodes - 1``.
        max_sample_size_per_model: the pre-committed budget per task (default ``episodes``); runs
            that would exceed it, counting earlier runs in the same rollouts folder, are refused.
        server: ``host:port`` of a policy server to evaluate through gRPC.
        protocol: the server's wire protocol: ``"foundry"`` (``foundry serve``) or ``"lbm"`` (LBM
            Eval's: ``foundry serve --protocol lbm`` or any LBM-compatible policy server).
        execute_steps: receding horizon: actions executed from each chunk before re-planning.
        video: record episodes (``video_format`` ``mp4`` or ``gif``); ``max_videos`` limits it to the
            first that many scenarios of each task.
        device: torch device of a policy loaded from an export folder (``cuda:0``).
        threads: torch CPU threads per worker (default: the cores shared among the workers). A policy's
            outputs change in the last bits with the thread count, and closed-loop episodes then diverge:
            pin it to get the same results on a machine with another core count.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from foundry_eval.results import results_path, timestamp_now, write_results

    if episodes < 1 or workers < 1 or start_index < 0:
        raise FoundryError(f"episodes ({episodes}) and workers ({workers}) must be >= 1, start_index >= 0")
    if (policy is None) == (server is None):
        raise FoundryError(
            "give exactly one of a policy (export folder, 'random', 'expert', factory) or a server"
        )
    if protocol not in ("foundry", "lbm"):
        raise FoundryError(f"protocol must be 'foundry' or 'lbm', got {protocol!r}")
    if video_format not in ("mp4", "gif"):
        raise FoundryError(f"video_format must be 'mp4' or 'gif', got {video_format!r}")
    if workers > 1 and callable(policy):
        try:
            pickle.dumps(policy)
        except Exception as exc:
            raise FoundryError(
                f"policy factory {policy!r} cannot be sent to worker processes ({exc}); use a top-level "
                "function or class (or functools.partial of one), or workers=1"
            ) from None
    if isinstance(policy, str | Path) and str(policy) not in BUILTIN_POLICIES and not Path(policy).is_dir():
        raise FoundryError(
            f"policy {str(policy)!r}: not a directory (expected an export folder, 'random' or 'expert')"
        )
    budget = episodes if max_sample_size_per_model is None else max_sample_size_per_model
    model = model_name or _default_model_name(policy, server)
    stamp = timestamp or timestamp_now()
    nodes = _task_nodes(tasks, image_size, cameras)
    indices = range(start_index, start_index + episodes)
    paths = [results_path(out_root, model, task, stamp) for task, _ in nodes]
    for (task, _), path in zip(nodes, paths):
        if path.exists():
            raise FoundryError(f"{path} already exists (pick another timestamp)")
        _check_budget(path.parent.parent, task, indices, budget)
    spec = RunSpec(
        policy=str(policy) if isinstance(policy, Path) else policy,
        server=server,
        tasks=tuple((task, node) for task, node in nodes),
        execute_steps=execute_steps,
        use_eval_seed=use_eval_seed,
        video_dirs=tuple(str(p.parent) if video else None for p in paths),
        video_format=video_format,
        video_indices=None if max_videos is None else range(start_index, start_index + max_videos),
        device=device,
        protocol=protocol,
    )
    jobs = [(spec, t, i) for t in range(len(nodes)) for i in indices]
    results: list[list[dict[str, Any]]] = [[] for _ in nodes]
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        tid = bar.add_task(f"{model}: 0 successes", total=len(jobs))
        n_success = 0
        for task_id, result in _execute(jobs, workers, threads):
            results[task_id].append(result)
            n_success += bool(result["is_success"])
            bar.update(tid, advance=1, description=f"{model}: {n_success} successes")
    elapsed = time.perf_counter() - start
    for (task, _), path, evals in zip(nodes, paths, results):
        evals.sort(key=lambda e: e["scenario_index"])
        crashed = sum(1 for e in evals if e.pop("crashed"))
        write_results(
            path,
            evals,
            budget,
            num_requested_evaluations=episodes,
            num_processes=workers,
            elapsed_time=round(elapsed, 3),
            num_crashed=crashed,
            model=model,
        )
        log.info(
            "%s: %d/%d successes, %d crashed -> %s",
            task,
            sum(e["is_success"] for e in evals),
            len(evals),
            crashed,
            path,
        )
    return paths


def _limit_threads(threads: int) -> None:
    """Give each worker its share of the cores: N workers x all-core torch thread pools oversubscribe."""
    import torch

    torch.set_num_threads(threads)


def _execute(
    jobs: list[tuple[RunSpec, int, int]], workers: int, threads: int | None = None
) -> Iterable[tuple[int, dict[str, Any]]]:
    if workers == 1:
        import torch

        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        worker = Worker(jobs[0][0])
        try:
            for _, task_id, index in jobs:
                yield task_id, worker.run(task_id, index)
        finally:
            worker.close()
            torch.set_num_threads(before)
        return
    ctx = mp.get_context("spawn")
    n = min(workers, len(jobs))
    per_worker = threads if threads is not None else max(1, (os.cpu_count() or 1) // n)
    with ctx.Pool(n, initializer=_limit_threads, initargs=(per_worker,)) as pool:
        yield from pool.imap_unordered(_worker_run, jobs)


def _default_model_name(policy: Any, server: str | None) -> str:
    if server is not None:
        return "served"
    if isinstance(policy, str | Path):
        return policy if policy in BUILTIN_POLICIES else Path(policy).resolve().name
    return getattr(policy, "__name__", type(policy).__name__)


def success_count(paths: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """``{Task: (successes, episodes)}`` of written results (for CLI summaries)."""
    out = {}
    for path in paths:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        evals = doc["evaluations"]
        task = evals[0]["skill_type"] if evals else path.parent.parent.parent.name
        out[task] = (int(np.sum([bool(e["is_success"]) for e in evals])), len(evals))
    return out
