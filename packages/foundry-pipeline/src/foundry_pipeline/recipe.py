"""The pipeline recipe: one YAML with a section per stage (each training stage is a full run config).

``${out}`` and ``${world}`` in any string are replaced by the pipeline's output folder and its
``world/`` subfolder: plain text substitution, no I/O, so the recipe stays a pure config.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from foundry_core.config import apply_overrides, deep_merge, load_config_file, parse_dataclass, yaml_load
from foundry_core.errors import ConfigError, did_you_mean
from foundry_pipeline.world import WorldConfig

#: ``scratch`` (the VLA's architecture without LLM/VLM pretraining) and ``baseline`` (any other policy,
#: e.g. vision-only) are optional: a recipe without their section does not run them.
TRAIN_STAGES = ("llm", "vlm", "vla", "scratch", "baseline")
OPTIONAL_STAGES = ("scratch", "baseline")
STAGES = ("world", "tokenizer", *TRAIN_STAGES, "eval", "report")


@dataclass(kw_only=True)
class PipelineRun:
    out_dir: str = "runs/pipeline"
    seed: int = 0
    #: Adjacent training stages that do not read each other's output, run side by side as child
    #: ``foundry train`` processes (each with its own ``run.threads``; logs in ``<stage>/train.log``).
    parallel_stages: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class TokenizerStage:
    vocab_size: int = 600


@dataclass(kw_only=True)
class EvalStage:
    episodes: int = 20
    workers: int = 2
    execute_steps: int = 4
    #: Stage names of trained policies, plus the built-in baselines ``random`` / ``expert``.
    policies: list[str] = field(default_factory=lambda: ["vla", "scratch", "random"])
    #: Rollout videos (GIF) written per (policy, task) for the report.
    videos: int = 2
    test: str = "step"
    alpha: float = 0.05
    #: torch threads per evaluation worker; pinned so a machine with more cores gets the same episodes.
    threads: int | None = 1


@dataclass(kw_only=True)
class Recipe:
    run: PipelineRun = field(default_factory=PipelineRun)
    world: WorldConfig = field(default_factory=WorldConfig)
    tokenizer: TokenizerStage = field(default_factory=TokenizerStage)
    llm: dict[str, Any] = field(default_factory=dict)
    vlm: dict[str, Any] = field(default_factory=dict)
    vla: dict[str, Any] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    eval: EvalStage = field(default_factory=EvalStage)

    def validate(self) -> None:
        for stage in TRAIN_STAGES:
            if stage not in OPTIONAL_STAGES and not getattr(self, stage):
                raise ConfigError(f"{stage}: a training stage needs a run config (model, data, train)")
        trained = [s for s in TRAIN_STAGES if s not in ("llm", "vlm") and getattr(self, s)]
        for name in self.eval.policies:
            if name not in (*trained, "random", "expert"):
                raise ConfigError(
                    f"eval.policies: {name!r} is not a policy of this recipe (its trained stages {trained}, or random/expert)"
                )

        self._validate_parallel()

    def _validate_parallel(self) -> None:
        group = self.run.parallel_stages
        if not group:
            return
        for name in group:
            if name not in TRAIN_STAGES:
                raise ConfigError(
                    f"run.parallel_stages: {name!r} is not a training stage{did_you_mean(name, TRAIN_STAGES)} "
                    f"(training stages: {', '.join(TRAIN_STAGES)})"
                )
            if not getattr(self, name):
                raise ConfigError(f"run.parallel_stages: {name!r} has no section in this recipe")
        if len(set(group)) < 2:
            raise ConfigError(f"run.parallel_stages: {group} names fewer than two distinct stages; nothing runs side by side")
        at = sorted(self.stages.index(s) for s in set(group))
        if at != list(range(at[0], at[0] + len(at))):
            raise ConfigError(
                f"run.parallel_stages: {group} are not adjacent in the stage order ({', '.join(self.stages)}); "
                "a stage between them would run after a stage that should have followed it"
            )
        for name in group:
            text = json.dumps(self.stage_config(name))
            for other in group:
                if other != name and str(self.out / other) in text:
                    raise ConfigError(
                        f"run.parallel_stages: {name!r} reads {other!r}'s output ({self.out / other}), so they cannot "
                        "run side by side"
                    )

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this recipe runs, in order (optional training stages only when configured)."""
        return tuple(s for s in STAGES if s not in OPTIONAL_STAGES or getattr(self, s))

    @property
    def out(self) -> Path:
        return Path(self.run.out_dir)

    def stage_config(self, stage: str) -> dict[str, Any]:
        """The run config of a training stage, with its output folder set inside the pipeline's."""
        cfg = copy.deepcopy(getattr(self, stage))
        cfg.setdefault("run", {})["out_dir"] = str(self.out / stage)
        cfg["run"].setdefault("name", f"pipeline_{stage}")
        return cfg


def default_recipe_text() -> str:
    return resources.files("foundry_pipeline").joinpath("default.yaml").read_text()


def _substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        for key, value in values.items():
            node = node.replace("${" + key + "}", value)
        return node
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    return node


def load_recipe(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The embedded default recipe, deep-merged with a recipe file (which states only what differs),
    with dotted overrides applied last."""
    raw = yaml_load(default_recipe_text())
    if path:
        raw = deep_merge(raw, load_config_file(path))
    raw = apply_overrides(raw, list(overrides))
    out = str(raw.get("run", {}).get("out_dir", "runs/pipeline"))
    raw = _substitute(raw, {"out": out, "world": f"{out}/world"})
    return parse_dataclass(Recipe, raw, where="")
