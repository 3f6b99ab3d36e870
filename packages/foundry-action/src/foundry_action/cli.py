"""``foundry data convert | inspect | validate | stats`` for episode stores (attached by plugin.py).

Command bodies import heavy modules lazily so ``foundry --help`` stays fast.
Test: ``uv run pytest packages/foundry-action/tests/test_action_cli.py``.
"""

from __future__ import annotations

import json

import click

from foundry_core.cli.groups import group


def add_commands(cli: click.Group) -> None:
    data = group(cli, "data")

    @data.command("convert")
    @click.argument("src", type=click.Path(exists=True))
    @click.argument("dst", type=click.Path())
    @click.option("--format", "fmt", default=None,
                  help="Source format: a registered converter (`foundry components converter`); default: detected.")
    @click.option("--workers", type=int, default=1, show_default=True, help="Parallel worker processes.")
    @click.option("--ray", "use_ray", is_flag=True, help="Run the work units as Ray tasks (RAY_ADDRESS or local).")
    @click.option("--fps", type=float, default=None, help="Control rate when the source has none.")
    @click.option("--task", default=None, help="Task name for every episode (default: from the source).")
    @click.option("--instruction", default=None, help="Instruction for episodes whose source has none.")
    @click.option("--cameras", default=None, help="Comma-separated camera names to keep (lbm_spartan: semantic names).")
    @click.option("--keep-windows", is_flag=True,
                  help="wds: one episode per window even when metadata.json places windows in their episodes.")
    @click.option("--overwrite", is_flag=True,
                  help="Replace DST if it is an episode store (never the source, never another folder).")
    @click.option("--no-stats", is_flag=True, help="Skip computing normalization statistics.")
    @click.option("--frames", "frames", default="lossless", show_default=True,
                  help="Camera-frame encoding of the store: lossless or jpeg (smaller, lossy).")
    @click.option("--jpeg-quality", type=int, default=None, help="JPEG quality 1..100 with --frames jpeg [default: 90].")
    def convert_cmd(src: str, dst: str, fmt: str | None, workers: int, use_ray: bool, fps: float | None,
                    task: str | None, instruction: str | None, cameras: str | None, keep_windows: bool, overwrite: bool,
                    no_stats: bool, frames: str, jpeg_quality: int | None) -> None:
        """Convert robot data (reference WebDataset, LeRobot v3, diffusion_policy replay buffer, LBM spartan) to a store."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from foundry_action.convert import ConvertOptions, convert, detect_format
        from foundry_action.frame_codecs import FrameEncoding

        encoding = FrameEncoding.parse(frames, jpeg_quality, where="--frames/--jpeg-quality")
        fmt = fmt or detect_format(src)
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), transient=True) as bar:
            job = bar.add_task(f"converting {fmt}", total=None)
            result = convert(src, dst, fmt=fmt, workers=workers, use_ray=use_ray, overwrite=overwrite,
                             options=ConvertOptions(fps=fps, task=task, instruction=instruction,
                                                     cameras=[c.strip() for c in cameras.split(",") if c.strip()]
                                                     if cameras else None, keep_windows=keep_windows),
                             compute_stats=not no_stats, progress=lambda d, n: bar.update(job, completed=d, total=n),
                             frames=encoding)
        for line in result.lines():
            click.echo(line)

    @data.command("inspect")
    @click.argument("path", type=click.Path(exists=True))
    @click.option("--out", type=click.Path(), default=None, help="Contact sheet PNG (default: PATH/contact_sheet.png).")
    @click.option("--episodes", type=int, default=4, show_default=True, help="Episodes in the contact sheet.")
    @click.option("--frames", type=int, default=4, show_default=True, help="Frames per camera and episode.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def inspect_cmd(path: str, out: str | None, episodes: int, frames: int, as_json: bool) -> None:
        """Summarise an episode store and write a contact sheet of frames and action plots."""
        from pathlib import Path

        from foundry_action.inspection import contact_sheet, summary
        from foundry_action.store import open_store

        store = open_store(path)
        info = summary(store)
        if as_json:
            click.echo(json.dumps(info, indent=2))
        else:
            length = info["length"]
            click.echo(f"{info['path']}: {info['episodes']} episodes, {info['steps']} steps at {info['fps']} fps")
            if length:
                click.echo(f"  episode length: min {length['min']}  mean {length['mean']:.1f}  max {length['max']}")
            click.echo(f"  fields ({len(info['fields'])}):")
            for name, f in info["fields"].items():
                click.echo(f"    {name:40s} {str(f['shape']):10s} {f['dtype']:8s} {f['semantics']}")
            click.echo("  cameras: " + (", ".join(f"{k} {h}x{w}" for k, (h, w) in info["cameras"].items()) or "none")
                       + (f"  (frames: {store.frames})" if info["cameras"] else ""))
            click.echo(f"  tasks: {info['tasks']}")
            click.echo(f"  sources: {info['sources']}")
            if info["success_rate"] is not None:
                click.echo(f"  success rate: {info['success_rate']:.2%}")
            click.echo(f"  stats: {'yes' if info['stats'] else 'no (run foundry data stats)'}")
        if len(store):
            png = contact_sheet(store, out or Path(path) / "contact_sheet.png", episodes=episodes, frames=frames)
            click.echo(f"  contact sheet: {png}")

    @data.command("validate")
    @click.argument("path", type=click.Path(exists=True))
    @click.option("--full", is_flag=True,
                  help="Check that every chunk exists and decodes (default: first and last frame of each episode).")
    def validate_cmd(path: str, full: bool) -> None:
        """Check an episode store: commit record, index, shapes, NaN/inf, metadata, frames, stats; exit 2 on a problem."""
        from foundry_action.inspection import validate

        store, warnings = validate(path, full_frames=full)
        for w in warnings:
            click.echo(f"warning: {w}")
        click.echo(f"ok: {len(store)} episodes, {store.num_steps} steps")

    @data.command("stats")
    @click.argument("path", type=click.Path(exists=True))
    @click.option("--window", nargs=2, type=int, default=None, metavar="PAST FUTURE",
                  help="Also compute per-window-position statistics.")
    def stats_cmd(path: str, window: tuple[int, int] | None) -> None:
        """(Re)compute normalization statistics into PATH/stats."""
        from foundry_action.normalization import NormStats
        from foundry_action.store import open_store

        store = open_store(path)
        out = NormStats.compute(store, window=tuple(window) if window else None).save(store.path / "stats")
        click.echo(f"wrote {out} ({out.stat().st_size / 1e3:.1f} kB, {len(store)} episodes)")
