"""``foundry pipeline``: the main job (import-light: the stages import torch/drake when they run)."""

from __future__ import annotations

import click


@click.command("pipeline")
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False), default=None,
              help="A pipeline recipe YAML (default: the embedded CPU recipe).")
@click.option("--stage", "stages", multiple=True, help="Run only these stages (repeatable).")
@click.option("--force", is_flag=True, help="Redo stages that are already done (and every later stage).")
@click.option("--print-recipe", is_flag=True, help="Print the resolved recipe (or one stage's run config) and exit.")
@click.argument("overrides", nargs=-1)
def pipeline_command(recipe_path: str | None, stages: tuple[str, ...], force: bool, print_recipe: bool,
                     overrides: tuple[str, ...]) -> None:
    """Toy world → LLM → VLM → VLA (+ from scratch) → closed-loop eval → STEP → report.html.

    Stages: world, tokenizer, llm, vlm, vla, scratch, [baseline], eval, report. Finished stages are skipped on a
    re-run. Dotted overrides apply to the recipe (e.g. ``eval.episodes=50 run.out_dir=runs/p2``).
    """
    import logging

    from foundry_core.config import dump_yaml, to_dict
    from foundry_pipeline.recipe import TRAIN_STAGES, load_recipe

    recipe = load_recipe(recipe_path, overrides)
    if print_recipe:
        if len(stages) == 1 and stages[0] in TRAIN_STAGES:
            click.echo(dump_yaml(recipe.stage_config(stages[0])), nl=False)
        else:
            click.echo(dump_yaml(to_dict(recipe)), nl=False)
        return
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from foundry_pipeline.run import run_pipeline

    summary = run_pipeline(recipe, stages=stages or None, force=force)
    report = summary.get("report", {}).get("report")
    from foundry_pipeline import clock

    timing = clock.totals(summary)
    click.echo(f"pipeline finished: {timing['seconds']:.0f} s of stage time{clock.describe(timing)}")
    if report:
        click.echo(f"report: {report}")
