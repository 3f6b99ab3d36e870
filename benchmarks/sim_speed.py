"""Speed of the Drake tabletop tasks on CPU: control steps (0.1 s each) per second per task with 0, 1
and 2 cameras at 128x128 and 224x224, plus expert episodes per minute with 2 worker processes.

Baseline (same process): 2 cameras at 224x224, the rendered setting closest to LBM Eval's cameras;
ours: no cameras, the setting for fast closed-loop evaluation of image-free checks. The ratio is the
speedup of ours over the baseline. Steps are driven by each task's scripted expert (so contacts and
grasps are included); resets are not timed.

Run: ``uv run python benchmarks/sim_speed.py [--quick]`` (quick: one task, few steps, < 60 s).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

TASKS = ["push_to_target", "pick_place_bin", "stack_blocks", "put_on_plate"]
CONFIGS = [([], 0), (["scene"], 128), (["scene", "wrist"], 128), (["scene"], 224), (["scene", "wrist"], 224)]


def _build(task: str, cameras: list[str], size: int) -> Any:
    from foundry_core.plugins import get_registry

    return get_registry().build("task", {"name": task, "cameras": cameras, "image_size": max(size, 8)})


def steps_per_second(task: str, cameras: list[str], size: int, steps: int) -> float:
    """Expert-driven control steps per second (reset excluded)."""
    env = _build(task, cameras, size)
    obs = env.reset(999)  # warm-up: first solves and renders allocate
    for _ in range(5):
        obs = env.step(obs["proprio"])
    done_steps, elapsed, seed = 0, 0.0, 0
    while done_steps < steps:
        obs = env.reset(seed)
        expert = env.expert()
        start = time.perf_counter()
        while not env.done() and done_steps < steps:
            obs = env.step(expert.act(obs))
            done_steps += 1
        elapsed += time.perf_counter() - start
        seed += 1
    env.close()
    return done_steps / elapsed


_ENV: Any = None


def _init(task: str, cameras: list[str], size: int) -> None:
    global _ENV
    _ENV = _build(task, cameras, size)


def _episode(seed: int) -> bool:
    from foundry_eval.sim.demos import rollout_expert

    return rollout_expert(_ENV, seed)["success"]


def episodes_per_minute(task: str, cameras: list[str], size: int, episodes: int, workers: int = 2) -> float:
    """Expert episodes per minute with ``workers`` processes (worker start-up excluded)."""
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init, initargs=(task, cameras, size)
    ) as pool:
        list(pool.map(_episode, range(10_000, 10_000 + workers)))  # warm-up: import drake, build envs
        start = time.perf_counter()
        list(pool.map(_episode, range(episodes)))
        return 60.0 * episodes / (time.perf_counter() - start)


def run(quick: bool) -> dict[str, Any]:
    tasks = TASKS[:1] if quick else TASKS
    steps = 20 if quick else 80
    rows = []
    for task in tasks:
        for cameras, size in CONFIGS:
            rate = steps_per_second(task, cameras, size, steps)
            rows.append({"task": task, "cameras": len(cameras), "size": size, "steps_per_s": rate})
    pick = lambda n, s: [r["steps_per_s"] for r in rows if r["cameras"] == n and r["size"] == s]  # noqa: E731
    baseline = sum(pick(2, 224)) / len(tasks)
    ours = sum(pick(0, 0)) / len(tasks)
    epm_task = tasks[0]
    epm = {
        "0 cameras": episodes_per_minute(epm_task, [], 0, 4 if quick else 12),
    }
    if not quick:
        epm["2 cameras 64x64"] = episodes_per_minute(epm_task, ["scene", "wrist"], 64, 12)
    return {
        "name": "sim_speed",
        "metric": "control steps/s without cameras / with 2 cameras at 224x224",
        "higher_is_better": True,
        "unit": "control steps/s (0.1 s each)",
        "baseline": baseline,
        "ours": ours,
        "ratio": ours / baseline,
        "rows": rows,
        "episodes_per_minute_2_workers": {"task": epm_task, **epm},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one task, few steps (< 60 s)")
    result = run(parser.parse_args().quick)
    print(f"{'task':<16} {'cams':>4} {'size':>5} {'steps/s':>9} {'x real time':>12}")
    for r in result["rows"]:
        size = f"{r['size']}" if r["cameras"] else "-"
        print(
            f"{r['task']:<16} {r['cameras']:>4} {size:>5} {r['steps_per_s']:>9.1f} {r['steps_per_s'] / 10:>12.1f}"
        )
    print(
        f"baseline (2 cams 224^2) {result['baseline']:.1f} steps/s, ours (0 cams) {result['ours']:.1f} steps/s, "
        f"ratio {result['ratio']:.2f}x"
    )
    epm = result["episodes_per_minute_2_workers"]
    for key, value in epm.items():
        if key != "task":
            print(f"expert episodes/minute, 2 workers, {epm['task']}, {key}: {value:.1f}")


if __name__ == "__main__":
    main()
