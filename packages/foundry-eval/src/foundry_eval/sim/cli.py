"""CLI command ``foundry eval demos``: scripted-expert demonstrations into a Zarr episode store.

Import-light: drake and zarr are imported inside the command body. Tested by
``tests/test_eval_sim_demos.py``.
"""

from __future__ import annotations

import click

from foundry_core.errors import ConfigError


def parse_cameras(value: str) -> list[str]:
    """``"scene,wrist"`` -> ["scene", "wrist"]; ``"none"`` or ``""`` -> [] (no rendering)."""
    if value.strip().lower() in ("", "none"):
        return []
    return [c.strip() for c in value.split(",") if c.strip()]


@click.command("demos")
@click.argument("task")
@click.option("--episodes", type=click.IntRange(min=1), required=True, help="Episodes to store.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Episode store (Zarr folder).")
@click.option("--cameras", default=None, help="Comma-separated, or 'none' (default: the task's own cameras).")
@click.option("--image-size", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed-start", type=click.IntRange(min=0), default=1_000_000, show_default=True)
@click.option("--keep-failures", is_flag=True, help="Store failed episodes too (marked success=false).")
@click.option(
    "--append", is_flag=True, help="Append to an existing store (or create it); never deletes episodes."
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing episode store at --out (never another folder)."
)
@click.option(
    "--frames",
    default=None,
    help="Camera-frame encoding: lossless or jpeg [default: lossless; --append keeps the store's].",
)
@click.option(
    "--jpeg-quality", type=int, default=None, help="JPEG quality 1..100 with --frames jpeg [default: 90]."
)
@click.option(
    "--noise-xyz",
    type=float,
    default=0.0,
    show_default=True,
    help="Recovery demos: std (m) of the offset added to the executed TCP position; the label stays the "
    "expert's clean action.",
)
@click.option(
    "--noise-yaw", type=float, default=0.0, show_default=True, help="Recovery demos: yaw offset std (rad)."
)
@click.option(
    "--noise-correlation",
    type=float,
    default=0.0,
    show_default=True,
    help="AR(1) coefficient of the offset per control step, in [0, 1) (higher: slower drifts).",
)
@click.option(
    "--tail-steps",
    type=int,
    default=0,
    show_default=True,
    help="Expert steps recorded after the task first succeeds (e.g. the whole release of a placed object). "
    "Keep 0 where the expert ends by retreating (push_to_target): a policy copies the retreat early.",
)
@click.option("--noise-seed", type=int, default=0, show_default=True, help="Seed of the noise stream.")
@click.option(
    "--dagger-policy",
    default=None,
    type=click.Path(file_okay=False),
    help="DAgger relabelling: this exported policy drives, the expert labels every step; every episode "
    "is stored (source: dagger). Use seeds of their own, e.g. --seed-start 3000000.",
)
@click.option(
    "--dagger-beta",
    type=float,
    default=0.0,
    show_default=True,
    help="Probability that a step executes the expert's action instead of the policy's.",
)
@click.option(
    "--dagger-execute-steps",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Steps of each predicted chunk the policy executes.",
)
@click.option("--dagger-seed", type=int, default=0, show_default=True, help="Seed of the beta coin.")
def demos_command(
    task: str,
    episodes: int,
    out: str,
    cameras: str | None,
    image_size: int,
    workers: int,
    seed_start: int,
    keep_failures: bool,
    append: bool,
    overwrite: bool,
    frames: str | None,
    jpeg_quality: int | None,
    noise_xyz: float,
    noise_yaw: float,
    noise_correlation: float,
    noise_seed: int,
    tail_steps: int,
    dagger_policy: str | None,
    dagger_beta: float,
    dagger_execute_steps: int,
    dagger_seed: int,
) -> None:
    """Generate scripted-expert demonstrations of a task with a scripted expert (e.g. push_to_target).

    With --noise-xyz/--noise-yaw the episodes are recovery demonstrations (DART): the env executes the
    expert's action plus noise, the store records the expert's clean action. With --dagger-policy a
    trained policy drives and the expert labels the states it reaches (DAgger).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from foundry_action.frame_codecs import FrameEncoding
    from foundry_core.plugins import get_registry
    from foundry_eval.sim.dagger import DaggerSpec
    from foundry_eval.sim.demos import ActionNoise, generate_demos

    if frames is None and jpeg_quality is not None:
        frames = "jpeg"  # a quality alone means JPEG frames
    encoding = (
        None if frames is None else FrameEncoding.parse(frames, jpeg_quality, where="--frames/--jpeg-quality")
    )

    noise = ActionNoise(xyz=noise_xyz, yaw=noise_yaw, correlation=noise_correlation, seed=noise_seed)
    noise.check(lambda field: f"--noise-{field}")
    if tail_steps < 0:
        raise ConfigError(f"--tail-steps must be >= 0, got {tail_steps}")
    dagger = None
    if dagger_policy is not None:
        dagger = DaggerSpec(
            dagger_policy, beta=dagger_beta, execute_steps=dagger_execute_steps, seed=dagger_seed
        )
        dagger.check(lambda field: f"--dagger-{field.replace('_', '-')}")
    elif dagger_beta != 0.0 or dagger_seed != 0:
        raise ConfigError("--dagger-beta/--dagger-seed need --dagger-policy")
    registry = get_registry()
    registry.get("task", task)  # unknown task -> error listing the known ones
    cls = registry.get("task", task).load()
    if not hasattr(cls, "expert"):
        raise ConfigError(f"env {task!r} has no scripted expert")
    node = {"name": task, "image_size": image_size}
    if cameras is not None:
        node["cameras"] = parse_cameras(cameras)
    with Progress(
        TextColumn(f"[bold]{task}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    ) as progress:
        bar = progress.add_task(task, total=episodes, info="")
        counts = {"attempts": 0, "ok": 0}

        def on_episode(result: dict, stored: int) -> None:
            counts["attempts"] += 1
            counts["ok"] += result["success"]
            who = "policy" if dagger is not None else "expert"
            progress.update(bar, completed=stored, info=f"{who} success {counts['ok']}/{counts['attempts']}")

        summary = generate_demos(
            node,
            episodes=episodes,
            out=out,
            workers=workers,
            seed_start=seed_start,
            keep_failures=keep_failures,
            append=append,
            overwrite=overwrite,
            on_episode=on_episode,
            frames=encoding,
            noise=noise,
            tail_steps=tail_steps,
            dagger=dagger,
        )
    click.echo(
        f"{summary.task}: stored {summary.stored} episodes ({summary.steps} steps attempted) in {summary.out}; "
        f"{'policy (DAgger rollouts)' if dagger is not None else 'expert'} success "
        f"{summary.successes}/{summary.attempted} ({summary.success_rate:.0%}); "
        f"{summary.seconds:.1f} s ({60 * summary.attempted / max(summary.seconds, 1e-9):.1f} episodes/min)"
    )
