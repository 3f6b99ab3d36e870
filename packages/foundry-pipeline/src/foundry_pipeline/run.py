"""Run the pipeline's stages in order; each finished stage leaves ``<out>/<stage>/DONE.json``.

A re-run skips stages whose marker exists (``force`` redoes them and every later stage). The marker
is written last, so an interrupted stage is redone, never half-trusted. Training stages call the
ordinary trainer (``train_from_config``) on their section of the recipe; nothing here is special-cased
for the pipeline that a user could not do with ``foundry train`` / ``foundry eval run``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.console import Console

from foundry_core.errors import FoundryError
from foundry_pipeline import clock
from foundry_pipeline.recipe import STAGES, TRAIN_STAGES, Recipe

log = logging.getLogger("foundry.pipeline")
DONE = "DONE.json"
#: Written into the run folder before any stage runs: stages replace folders only inside a folder we own.
RUN_MARKER = ".foundry-pipeline.json"
_OUR_ENTRIES = {*STAGES, "report.html", RUN_MARKER}


def claim_run_folder(out: Path) -> None:
    """Mark ``out`` as a pipeline run folder, or refuse a folder that is not ours.

    Stages delete and rewrite their own sub-folders (a redone stage starts clean), so they may only run
    in a new or empty folder, one carrying our marker, or one that holds nothing but what the pipeline
    writes (stage folders and ``report.html``: a run from before the marker existed).
    """
    if (out / RUN_MARKER).is_file():
        return
    if out.exists() and not out.is_dir():
        raise FoundryError(f"{out}: run.out_dir is a file, not a folder; choose another run.out_dir")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _OUR_ENTRIES) if out.is_dir() else []
    if foreign:
        raise FoundryError(
            f"{out}: not a folder that `foundry pipeline` wrote (no {RUN_MARKER}; it holds {foreign[:5]}), and "
            "stages replace their sub-folders; choose a new or empty run.out_dir"
        )
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (RUN_MARKER + ".tmp")
    tmp.write_text(json.dumps({"format": "foundry-pipeline-run", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
    tmp.replace(out / RUN_MARKER)


class Pipeline:
    """The stages of one recipe; ``run()`` executes what is not done yet."""

    def __init__(self, recipe: Recipe, *, console: Console | None = None) -> None:
        self.recipe = recipe
        self.out = recipe.out
        self.console = console or Console(stderr=True)
        self.steps: dict[str, Callable[[Path], dict[str, Any]]] = {
            "world": self.world,
            "tokenizer": self.tokenizer,
            **{s: (lambda d, s=s: self.train(s, d)) for s in TRAIN_STAGES},
            "eval": self.evaluate,
            "report": self.report,
        }

    # ------------------------------------------------------------------ orchestration
    def done(self, stage: str) -> dict[str, Any] | None:
        marker = self.out / stage / DONE
        return json.loads(marker.read_text()) if marker.is_file() else None

    def run(self, *, stages: Iterable[str] | None = None, force: bool = False) -> dict[str, dict[str, Any]]:
        active = self.recipe.stages
        wanted = list(stages) if stages else list(active)
        for s in wanted:
            if s not in active:
                known = f"stages of this recipe: {', '.join(active)}"
                if s in STAGES:
                    raise FoundryError(f"pipeline stage {s!r} has no section in this recipe; {known}")
                raise FoundryError(f"unknown pipeline stage {s!r}; {known}")
        self.check_stage_configs(wanted)
        claim_run_folder(self.out)
        summary: dict[str, dict[str, Any]] = {}
        redo = False  # a redone stage invalidates everything after it
        parallel = self.recipe.run.parallel_stages
        for i, stage in enumerate(active):
            if stage not in wanted or stage in summary:
                continue
            previous = self.done(stage)
            if previous is not None and not (force or redo):
                self.console.print(f"[dim]\\[{i + 1}/{len(active)}] {stage}: done earlier ({previous['seconds']:.0f} s), skipped[/dim]")
                summary[stage] = previous
                continue
            redo = True
            # the group is adjacent (validated): this stage and the group's wanted stages right after it
            # (one before it that is done stays done; the ones after it are redone, as in sequence)
            group = [s for s in active[i:] if s in parallel and s in wanted] if stage in parallel else [stage]
            if len(group) > 1:
                from foundry_pipeline.parallel import run_side_by_side

                summary.update(run_side_by_side(self, group))
                continue
            stage_dir = self._fresh_stage_dir(stage)
            self.console.rule(f"[bold][{i + 1}/{len(active)}] {stage}")
            start = clock.read()
            result = self.steps[stage](stage_dir)
            result.update(clock.since(start))
            self.mark_done(stage, result)
            summary[stage] = result
            self.console.print(f"{stage}: done in {result['seconds']:.0f} s{clock.describe(result)}")
        return summary

    def _fresh_stage_dir(self, stage: str) -> Path:
        stage_dir = self.out / stage
        if (stage_dir / DONE).exists():
            (stage_dir / DONE).unlink()
        stage_dir.mkdir(parents=True, exist_ok=True)
        return stage_dir

    def mark_done(self, stage: str, result: dict[str, Any]) -> None:
        """Write the stage's marker last and atomically: an interrupted stage is redone, never half-trusted."""
        tmp = self.out / stage / (DONE + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str))
        tmp.replace(self.out / stage / DONE)

    def check_stage_configs(self, stages: Iterable[str]) -> None:
        """Validate the run config of every training stage to run (overrides included) before the first
        stage starts: a typo in ``vla.train...`` fails now, not an hour later when that stage begins."""
        from foundry_core.config import parse_dataclass
        from foundry_core.plugins import get_registry
        from foundry_core.run_config import RunConfig

        registry = get_registry()
        for stage in TRAIN_STAGES:
            if stage in stages and getattr(self.recipe, stage):
                parse_dataclass(RunConfig, self.recipe.stage_config(stage), where=stage, resolve=registry.config_class)

    # ------------------------------------------------------------------ stages
    def world(self, d: Path) -> dict[str, Any]:
        from rich.progress import Progress

        from foundry_pipeline.world import build_captions, build_demos, build_text

        cfg = self.recipe.world
        for sub in ("text", "captions", "captions_heldout", "demos.zarr"):
            if (d / sub).exists():
                shutil.rmtree(d / sub)
        demo_tasks = cfg.demo_tasks or cfg.tasks
        with Progress(console=self.console, transient=False) as bar:
            t = bar.add_task("text (scene descriptions)", total=cfg.text_docs_per_task * len(cfg.tasks))
            timing, start = {}, clock.read()
            text = build_text(cfg, d / "text", progress=lambda n: bar.advance(t, n))
            timing["text"], start = clock.since(start), clock.read()
            c = bar.add_task("images + captions", total=cfg.images_per_task * len(cfg.tasks) + cfg.caption_scenes + cfg.heldout_scenes)
            captions = build_captions(cfg, d / "captions", progress=lambda n: bar.advance(c, n))
            timing["captions"], start = clock.since(start), clock.read()
            m = bar.add_task("expert demonstrations (attempts)", total=None)
            demos = build_demos(cfg, d / "demos.zarr", progress=lambda n: bar.advance(m, n))
            timing["demos"] = clock.since(start)
            bar.update(m, total=bar.tasks[m].completed)
        return {"text": text, "captions": captions, "demos": demos, "demo_tasks": demo_tasks, "part_timing": timing}

    def tokenizer(self, d: Path) -> dict[str, Any]:
        from foundry_core.data.shards import iter_shard_samples, read_manifest
        from foundry_core.tokenizers import train_bpe

        texts = [
            members["json"].decode()
            for shard in read_manifest(str(self.out / "world" / "text"))
            for _key, members in iter_shard_samples(shard.url)
        ]
        tok = train_bpe(texts, self.recipe.tokenizer.vocab_size, d)
        return {"vocab_size": len(tok), "documents": len(texts), "path": str(d)}

    def train(self, stage: str, d: Path) -> dict[str, Any]:
        from foundry_core.train.run import train_from_config

        clear_training_dir(d)
        return training_summary(train_from_config(self.recipe.stage_config(stage)))
    def evaluate(self, d: Path) -> dict[str, Any]:
        from foundry_eval.rollout.runner import run_rollouts, success_count

        ev, world = self.recipe.eval, self.recipe.world
        tasks = world.demo_tasks or world.tasks
        results_root = d / "results"
        if results_root.exists():
            shutil.rmtree(results_root)
        summary: dict[str, Any] = {}
        for name in ev.policies:
            policy = name if name in ("random", "expert") else str(self.out / name / "export")
            self.console.print(f"evaluating [bold]{name}[/bold] on {', '.join(tasks)} ({ev.episodes} episodes each)")
            paths = run_rollouts(
                policy,
                [world.task_node(t) for t in tasks],
                ev.episodes,
                results_root,
                model_name=name,
                workers=ev.workers,
                execute_steps=ev.execute_steps,
                threads=ev.threads,
                video=ev.videos > 0,
                video_format="gif",
                max_videos=ev.videos,
            )
            summary[name] = {task: {"successes": s, "n": n} for task, (s, n) in success_count(paths).items()}
        return {"results": str(results_root), "success": summary}

    def report(self, d: Path) -> dict[str, Any]:
        from foundry_pipeline.report import write_pipeline_report

        stages = {s: done for s in self.recipe.stages if (done := self.done(s)) is not None}
        path, decisions = write_pipeline_report(self.out, self.recipe.eval, stages, d)
        final = self.out / "report.html"
        shutil.copyfile(path, final)
        return {"report": str(final), "decisions": decisions}


def clear_training_dir(d: Path) -> None:
    """A training stage is redone from scratch: stale checkpoints must not be resumed."""
    if (d / "checkpoints").exists() or (d / "export").exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)


def training_summary(run_dir: Path) -> dict[str, Any]:
    """What a training stage's DONE marker records: its export, steps, first/final loss (from metrics.jsonl)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r]
    out: dict[str, Any] = {"export": str(run_dir / "export"), "steps": rows[-1].get("step") if rows else 0}
    if losses:
        out.update(first_loss=losses[0], final_loss=losses[-1])
    out["final_per_source"] = {k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("loss/")}
    return out


def run_pipeline(recipe: Recipe, *, stages: Iterable[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Run (or resume) the pipeline of ``recipe``; returns the per-stage summaries."""
    return Pipeline(recipe).run(stages=stages, force=force)
