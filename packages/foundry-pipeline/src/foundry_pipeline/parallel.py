"""Training stages side by side (``run.parallel_stages``): one child ``foundry train`` process per stage.

Two small CPU trainings at one thread each finish sooner than the same two one after the other at two
threads (small matmuls do not scale to a second core), and their numbers do not depend on it: each child
pins its own ``run.threads``. A child is an ordinary ``foundry train`` of the stage's run config
(written to ``<stage>/pipeline_stage.yaml``, output in ``<stage>/train.log``); progress is read from each
run's ``metrics.jsonl``. If one fails or the user interrupts, every other child is stopped and the
stages stay undone (no ``DONE.json``): a re-run redoes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry_core.config import dump_yaml
from foundry_core.errors import FoundryError
from foundry_pipeline import clock

if TYPE_CHECKING:
    from foundry_pipeline.run import Pipeline

#: Seconds between looks at the children (progress and exit codes).
POLL_S = 1.0


def run_side_by_side(pipeline: Pipeline, stages: list[str]) -> dict[str, dict[str, Any]]:
    """Train ``stages`` at once; returns their DONE summaries (each with its own ``seconds``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from foundry_pipeline.run import clear_training_dir, training_summary

    active = pipeline.recipe.stages
    pipeline.console.rule(f"[bold][{', '.join(f'{active.index(s) + 1}/{len(active)}' for s in stages)}] "
                          f"{' + '.join(stages)} (side by side)")
    children: dict[str, tuple[subprocess.Popen[bytes], Path, Any]] = {}
    started = clock.read()
    finished: dict[str, dict[str, Any]] = {}
    reaped = started
    try:
        for stage in stages:
            d = pipeline._fresh_stage_dir(stage)
            clear_training_dir(d)
            cfg = pipeline.recipe.stage_config(stage)
            (d / "pipeline_stage.yaml").write_text(dump_yaml(cfg))
            log_path = d / "train.log"
            log = log_path.open("wb")
            cmd = [sys.executable, "-m", "foundry_core.cli.main", "train", str(d / "pipeline_stage.yaml")]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            children[stage] = (proc, log_path, log)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=pipeline.console) as bar:
            tasks = {s: bar.add_task(s, total=_budget_steps(pipeline.recipe.stage_config(s))) for s in stages}
            while len(finished) < len(stages):
                time.sleep(POLL_S)
                for stage, (proc, log_path, _) in children.items():
                    bar.update(tasks[stage], completed=_last_step(pipeline.out / stage / "metrics.jsonl"))
                    if stage in finished or proc.poll() is None:
                        continue
                    # a child's CPU time joins os.times() when it is reaped: the delta since the last reap is its own
                    now = clock.read()
                    finished[stage] = {**clock.since(started, now), "cpu_seconds": round(now.cpu - reaped.cpu, 1)}
                    reaped = now
                    if proc.returncode != 0:
                        raise FoundryError(
                            f"pipeline stage {stage!r}: `foundry train` exited with code {proc.returncode}; "
                            f"its log: {log_path}\n{_tail(log_path)}"
                        )
    finally:
        for proc, _, log in children.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
    out: dict[str, dict[str, Any]] = {}
    for stage in stages:
        result = training_summary(pipeline.out / stage)
        result.update(finished[stage])
        result["side_by_side_with"] = [s for s in stages if s != stage]
        pipeline.mark_done(stage, result)
        pipeline.console.print(f"{stage}: done in {result['seconds']:.0f} s, side by side{clock.describe(result)}")
        out[stage] = result
    return out


def _budget_steps(cfg: dict[str, Any]) -> int | None:
    steps = cfg.get("train", {}).get("budget", {}).get("steps")
    return int(steps) if isinstance(steps, int) else None


def _last_step(metrics: Path) -> int:
    """The step of the last complete line of a run's metrics.jsonl (0 before the first)."""
    try:
        with metrics.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [line for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            continue  # a line still being written, or the cut-off first line of the window
    return 0


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])
