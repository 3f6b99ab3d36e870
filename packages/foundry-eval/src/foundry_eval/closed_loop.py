"""Closed-loop evaluation during training: a trainer callback (``train.callbacks``) that exports the
current weights every ``every_steps`` optimizer steps, rolls them out on named tasks and logs each
task's success rate with its 90% Clopper–Pearson interval (``closed_loop/<Task>/success|ci_low|ci_high|n``).

The export is the trainer's own (normalization statistics and policy metadata included), written to
``<run>/closed_loop/step_XXXXXXX/export``; the rollouts' ``results.json`` files go beside it, so
``foundry eval compare <run>/closed_loop`` compares the steps. Test:
``uv run pytest packages/foundry-eval/tests/test_eval_closed_loop.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_core.errors import ConfigError
from foundry_core.registry import BuildContext, Registry
from foundry_eval.serving.session import DEFAULT_EXECUTE_STEPS


class ClosedLoopEval:
    """Trainer callback: roll out the current weights every N steps and log success with its interval."""

    @dataclass(kw_only=True)
    class Config:
        every_steps: int
        #: Task names (``reach_target``) or task nodes (``{name: reach_target, time_limit_s: 5}``).
        tasks: list[Any]
        episodes: int = 10
        execute_steps: int = DEFAULT_EXECUTE_STEPS
        #: Rollout worker processes; with more than one the workers rebuild the policy from the
        #: installed plugins (a component registered only in-process is not visible there).
        workers: int = 1

        def validate(self) -> None:
            if self.every_steps < 1:
                raise ConfigError(f"every_steps must be >= 1, got {self.every_steps}")
            if not self.tasks:
                raise ConfigError("tasks: name at least one task")
            if self.episodes < 1 or self.workers < 1 or self.execute_steps < 1:
                raise ConfigError("episodes, workers and execute_steps must be >= 1")

    def __init__(self, cfg: Config, registry: Registry) -> None:
        self.cfg = cfg
        self.registry = registry
        self.logged: list[dict[str, Any]] = []

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> ClosedLoopEval:
        return cls(cfg, ctx.registry)

    def on_step_end(self, trainer: Any, out: dict[str, Any]) -> None:
        step = trainer.state.step
        if step % self.cfg.every_steps == 0:
            self.evaluate(trainer, step)

    def evaluate(self, trainer: Any, step: int) -> dict[str, Any]:
        """Collective (the export gathers weights on every rank); rank 0 rolls out and logs."""
        from foundry_action.policy import Policy
        from foundry_eval.rollout.runner import run_rollouts, success_count
        from foundry_eval.stats.clopper_pearson import clopper_pearson

        folder = Path(trainer.run_dir) / "closed_loop" / f"step_{step:07d}"
        export = trainer.export(folder / "export")
        if not trainer.info.is_main:
            return {}
        policy: Any = str(export)
        if self.cfg.workers == 1:  # in-process: the trainer's registry (test plugins included)
            policy = functools.partial(Policy.from_pretrained, str(export), registry=self.registry)
        paths = run_rollouts(
            policy, self.cfg.tasks, self.cfg.episodes, folder / "results", model_name=f"step_{step:07d}",
            workers=self.cfg.workers, execute_steps=self.cfg.execute_steps, progress=False,
        )
        values: dict[str, Any] = {}
        for task, (successes, n) in success_count(paths).items():
            low, high = clopper_pearson(successes, n)
            values.update({f"closed_loop/{task}/success": successes / n, f"closed_loop/{task}/ci_low": low,
                           f"closed_loop/{task}/ci_high": high, f"closed_loop/{task}/n": n})
        trainer.metrics.log(step, values)
        self.logged.append({"step": step, **values})
        return values
